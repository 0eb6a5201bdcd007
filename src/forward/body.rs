//! The bodies the proxy carries: the client's request body (read whole when it may be needed
//! again, else streamed through once), and Azure's answer on its way back ([`Watched`]).

use crate::error::ProxyError;
use crate::upstream;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The client's request body.
pub(super) enum Inbound {
    /// Read whole: routing may read it, and every attempt can send it.
    Read(Bytes),
    /// Streamed through to the first attempt, with its announced length; gone after that.
    Streamed {
        body: Option<Body>,
        length: Option<HeaderValue>,
    },
}

/// An upstream body on its way to the client: ends with an error after too long a silence,
/// holds the backend's concurrency slot, and counts as an in-flight stream until dropped
/// (finished, failed, or the client went away — which also closes the upstream connection).
/// Frames pass through as they come, and so does the body's size (the client sees Azure's
/// `content-length`).
pub(super) struct Watched<B> {
    inner: B,
    idle: std::time::Duration,
    /// When the silence began: the last frame, or the start.
    since: tokio::time::Instant,
    /// Armed only when Azure keeps the body waiting: an answer that is there whole (most
    /// non-streamed ones) never touches the timer wheel.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    inflight: metrics::Gauge,
}

impl Inbound {
    /// Takes the client's body: refuses one announced over `limit`, reads it whole where the
    /// route needs it (`needs_body`: the `model` field), where a retry may replay it (at most
    /// `replay_limit` bytes; `None` without retries), or where there is none; streams it
    /// otherwise.
    pub(super) async fn take(
        headers: &HeaderMap,
        body: Body,
        needs_body: bool,
        replay_limit: Option<usize>,
        limit: usize,
    ) -> Result<Inbound, ProxyError> {
        let declared = content_length(headers);
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        let whole = read_whole(
            needs_body,
            declared,
            headers.contains_key(header::TRANSFER_ENCODING),
            replay_limit,
        );
        Ok(if whole {
            Inbound::Read(read_body(body, limit).await?)
        } else {
            Inbound::Streamed {
                body: Some(body),
                length: headers.get(header::CONTENT_LENGTH).cloned(),
            }
        })
    }

    /// The body when it was read whole (for routing).
    pub(super) fn bytes(&self) -> Option<&Bytes> {
        match self {
            Inbound::Read(bytes) => Some(bytes),
            Inbound::Streamed { .. } => None,
        }
    }

    /// Whether the body can be sent more than once.
    pub(super) fn is_replayable(&self) -> bool {
        matches!(self, Inbound::Read(_))
    }

    /// The body of one attempt — `rewritten` when routing changed it — with its length set in
    /// `headers`. A streamed body goes to the first attempt only.
    pub(super) fn for_attempt(
        &mut self,
        rewritten: Option<&Bytes>,
        headers: &mut HeaderMap,
        limit: usize,
    ) -> upstream::RequestBody {
        match (rewritten, self) {
            (Some(bytes), _) => whole(bytes, headers),
            (None, Inbound::Read(bytes)) => whole(bytes, headers),
            (None, Inbound::Streamed { body, length }) => {
                if let Some(len) = length {
                    headers.insert(header::CONTENT_LENGTH, len.clone());
                }
                match body.take() {
                    Some(body) => upstream::streamed(body, limit),
                    None => upstream::full(Bytes::new()),
                }
            }
        }
    }
}

/// A body in hand, with its length.
fn whole(bytes: &Bytes, headers: &mut HeaderMap) -> upstream::RequestBody {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    upstream::full(bytes.clone())
}

/// Whether to read the client's body whole before sending: routing needs it, a retry may
/// replay it (small enough to keep), or there is none — no length and no chunked encoding
/// means no body (RFC 9112 §6.3), nothing to stream.
fn read_whole(
    needs_body: bool,
    declared: Option<u64>,
    transfer_encoding: bool,
    replay_limit: Option<usize>,
) -> bool {
    let replay_possible =
        replay_limit.is_some_and(|keep| declared.is_some_and(|len| len <= keep as u64));
    let bodyless = declared == Some(0) || (declared.is_none() && !transfer_encoding);
    needs_body || replay_possible || bodyless
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
}

impl<B> Watched<B> {
    pub(super) fn new(
        inner: B,
        idle: std::time::Duration,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        inflight: metrics::Gauge,
    ) -> Watched<B> {
        inflight.increment(1.0);
        Watched {
            inner,
            idle,
            since: tokio::time::Instant::now(),
            timer: None,
            _permit: permit,
            inflight,
        }
    }
}

impl<B> Watched<B> {
    /// Polls the idle timer, arming it for the current silence first.
    fn timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.since + self.idle;
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx)
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.inflight.decrement(1.0);
    }
}

impl<B> http_body::Body for Watched<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<upstream::BoxError>,
{
    type Data = Bytes;
    type Error = upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.since = tokio::time::Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer(cx) {
                Poll::Ready(()) => {
                    tracing::warn!(
                        idle_secs = self.idle.as_secs_f64(),
                        "no data from Azure within upstream.idle_timeout_secs: ending the stream"
                    );
                    Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "upstream.idle_timeout_secs exceeded",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_whole_only_when_needed_replayable_or_absent() {
        let retrying = Some(64);
        assert!(read_whole(true, None, true, retrying), "routing reads it");
        assert!(
            read_whole(false, Some(64), false, retrying),
            "small enough to replay"
        );
        assert!(
            !read_whole(false, Some(65), false, retrying),
            "too big to keep"
        );
        assert!(
            !read_whole(false, None, true, retrying),
            "chunked: streamed"
        );
        assert!(read_whole(false, None, false, retrying), "no body at all");
        assert!(read_whole(false, Some(0), false, None), "empty");
        assert!(
            !read_whole(false, Some(10), false, None),
            "no retries: nothing to replay"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_goes_to_the_first_attempt_only() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let mut body = Inbound::Streamed {
            body: Some(Body::from("hello")),
            length: headers.get(header::CONTENT_LENGTH).cloned(),
        };
        assert!(!body.is_replayable());
        let mut out = HeaderMap::new();
        let first = body.for_attempt(None, &mut out, 1024);
        assert_eq!(out[header::CONTENT_LENGTH], "5");
        assert_eq!(first.collect().await.unwrap().to_bytes(), "hello");
        let second = body.for_attempt(None, &mut out, 1024);
        assert!(second.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_read_body_is_sent_again_and_a_rewritten_one_wins() {
        let mut body = Inbound::Read(Bytes::from_static(b"{\"model\":\"m\"}"));
        assert!(body.is_replayable());
        let mut out = HeaderMap::new();
        for _ in 0..2 {
            let sent = body.for_attempt(None, &mut out, 1024);
            assert_eq!(
                sent.collect().await.unwrap().to_bytes(),
                "{\"model\":\"m\"}"
            );
        }
        let rewritten = Bytes::from_static(b"{\"model\":\"d\"}");
        let sent = body.for_attempt(Some(&rewritten), &mut out, 1024);
        assert_eq!(out[header::CONTENT_LENGTH], "13");
        assert_eq!(sent.collect().await.unwrap().to_bytes(), rewritten);
    }

    #[tokio::test]
    async fn a_body_announced_or_found_over_the_limit_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
        let e = Inbound::take(&headers, Body::from("x"), false, Some(64), 10)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ProxyError::BodyTooLarge { limit: 10 }), "{e}");
        let e = read_body(Body::from(vec![b'x'; 100]), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, ProxyError::BodyTooLarge { limit: 10 }), "{e}");
    }
}
