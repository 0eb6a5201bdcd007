//! The HTTP client that carries proxied requests to Azure: hyper connections over rustls (the
//! platform's certificate verifier) in a pool per serving thread ([`pool`]). Requests and
//! answers stay `http` types from the client's connection to Azure's: no URL re-parsing, header
//! map copies or redirect machinery per request. WebSocket handshakes go on connections of
//! their own (HTTP/1.1 only, never pooled), counted by the [`WebSockets`] every worker's client
//! shares.

mod pool;

pub(crate) use pool::{Failure, PooledBody};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Any error a body can carry.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What is sent to Azure: bytes in hand, or the client's body streamed (and bounded).
pub(crate) type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
/// What comes back: Azure's body as it arrives, or one already read (e.g. a 401 inspected to
/// decide on a token refresh).
pub(crate) type ResponseBody = Either<PooledBody, Full<Bytes>>;
/// One answer from Azure.
pub(crate) type Response = http::Response<ResponseBody>;
/// A failure to get an answer (connect, TLS, the connection closing early, a body error).
pub(crate) type Error = pool::Error;

/// A serving thread's client; clones share its connections, and cost one reference count (a
/// request handler gets its own clone).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
    /// The serving thread's deadlines, for the wait for an answer; tokio's timer without them.
    deadlines: Option<crate::deadline::Deadlines>,
}

#[derive(Debug)]
struct Inner {
    pool: Arc<pool::Pool>,
    /// TLS with ALPN `http/1.1` only: a WebSocket upgrade needs HTTP/1.1.
    upgrades: HttpsConnector<HttpConnector>,
    websockets: Arc<WebSockets>,
}

/// The WebSockets open through the proxy, shared by every worker's client, and the signal that
/// closes them when the proxy shuts down.
#[derive(Debug)]
pub struct WebSockets {
    open: AtomicUsize,
    closing: tokio::sync::watch::Sender<bool>,
}

/// One open WebSocket's place in [`WebSockets`]; freed (and the gauge lowered) when dropped.
#[derive(Debug)]
pub struct SocketSlot(Arc<WebSockets>);

/// The gauge of open WebSockets.
const OPEN_WEBSOCKETS: &str = "entra_proxy_open_websockets";
/// How long closing WebSockets get to finish their close handshakes at shutdown: longer than a
/// relay waits for both sides' close (`forward::websocket`), so every relay ends — and logs its
/// end — before the serving thread stops.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(3);

impl Client {
    /// A client with its own connections: TLS via rustls and the platform's trust store,
    /// HTTP/2 when Azure offers it (ALPN), HTTP/1.1 otherwise; plain http only for endpoints
    /// configured as such (the local emulator). Its connections' tasks run on the thread that
    /// sends the requests.
    pub fn new(connect_timeout: Duration) -> Result<Client, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| format!("cannot load the platform's TLS trust store: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let pool = Arc::new(pool::Pool::new(https));
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let upgrades = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| format!("cannot load the platform's TLS trust store: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            inner: Arc::new(Inner {
                pool,
                upgrades,
                websockets: WebSockets::new(),
            }),
            deadlines: None,
        })
    }

    /// This client, counting its WebSockets in `websockets` (shared with the other workers').
    pub fn with_websockets(self, websockets: Arc<WebSockets>) -> Client {
        Client {
            inner: Arc::new(Inner {
                pool: self.inner.pool.clone(),
                upgrades: self.inner.upgrades.clone(),
                websockets,
            }),
            deadlines: self.deadlines,
        }
    }

    /// This client, timing its waits for an answer on a serving thread's `deadlines`.
    pub(crate) fn with_deadlines(self, deadlines: crate::deadline::Deadlines) -> Client {
        Client {
            deadlines: Some(deadlines),
            ..self
        }
    }

    /// The WebSockets this client counts.
    pub fn websockets(&self) -> &Arc<WebSockets> {
        &self.inner.websockets
    }

    /// Sends a WebSocket handshake (origin-form `request` to `uri`'s host) on a new HTTP/1.1
    /// connection; resolves with Azure's answer head. On 101 the connection is handed over
    /// (`hyper::upgrade::on`).
    pub async fn upgrade(
        &self,
        uri: http::Uri,
        request: http::Request<http_body_util::Empty<Bytes>>,
    ) -> Result<http::Response<PooledBody>, BoxError> {
        use tower::ServiceExt as _;
        let io = self.inner.upgrades.clone().oneshot(uri).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let answer = sender.send_request(request).await?;
        Ok(answer.map(PooledBody::unpooled))
    }

    /// Sends one request (absolute URI); resolves when Azure's answer head has arrived.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    pub fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> impl Future<Output = Result<Response, Error>> {
        async move {
            let response = self.inner.pool.send(request).await?;
            Ok(response.map(Either::Left))
        }
    }

    /// [`Client::send`], given up at `at` when the answer head has not arrived by then.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    pub(crate) fn send_by(
        &self,
        request: http::Request<RequestBody>,
        at: std::time::Instant,
    ) -> impl Future<Output = Result<Result<Response, Error>, crate::deadline::Elapsed>> {
        async move {
            match &self.deadlines {
                Some(deadlines) => {
                    let send = std::pin::pin!(self.send(request));
                    crate::deadline::timeout_at(deadlines, at, send).await
                }
                None => tokio::time::timeout_at(at.into(), self.send(request))
                    .await
                    .map_err(|_| crate::deadline::Elapsed),
            }
        }
    }
}

impl WebSockets {
    pub fn new() -> Arc<WebSockets> {
        // Present in /metrics from the start (0), not only once a socket has opened.
        metrics::gauge!(OPEN_WEBSOCKETS).increment(0.0);
        Arc::new(WebSockets {
            open: AtomicUsize::new(0),
            closing: tokio::sync::watch::channel(false).0,
        })
    }

    /// A place for one more WebSocket, unless `max` are open (or the proxy is shutting down).
    pub fn try_open(self: &Arc<Self>, max: usize) -> Option<SocketSlot> {
        if *self.closing.borrow() {
            return None;
        }
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics::gauge!(OPEN_WEBSOCKETS).increment(1.0);
        Some(SocketSlot(self.clone()))
    }

    /// WebSockets open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Turns true when the open WebSockets are to close (shutdown).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// At shutdown: lets open WebSockets run until `deadline` (the drain period), then tells
    /// them to close (1001) and waits briefly for their close handshakes.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        let poll = Duration::from_millis(20);
        while self.open_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(poll).await;
        }
        self.closing.send_replace(true);
        let closed = tokio::time::Instant::now() + CLOSE_GRACE;
        while self.open_count() > 0 && tokio::time::Instant::now() < closed {
            tokio::time::sleep(poll).await;
        }
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(OPEN_WEBSOCKETS).decrement(1.0);
    }
}

/// A body already in memory.
pub(crate) fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The client's body streamed through, failing once more than `limit` bytes have gone by.
pub(crate) fn streamed(body: axum::body::Body, limit: usize) -> RequestBody {
    Limited::new(body, limit).boxed_unsync()
}

/// A response whose body has already been read.
pub(crate) fn with_read_body(head: http::response::Parts, body: Bytes) -> Response {
    http::Response::from_parts(head, Either::Right(Full::new(body)))
}

/// Whether sending failed because the streamed request body outgrew its limit.
pub(crate) fn body_too_large(e: &Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The announced body length of an answer, when it gave one.
pub(crate) fn content_length(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_streamed_body_over_its_limit_fails_with_a_recognisable_error() {
        let body = axum::body::Body::from(vec![b'x'; 100]);
        let err = streamed(body, 10).collect().await.unwrap_err();
        assert!(
            err.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
        );
        let ok = streamed(axum::body::Body::from("small"), 10)
            .collect()
            .await
            .unwrap();
        assert_eq!(ok.to_bytes(), "small");
    }

    #[test]
    fn a_client_builds_with_the_platform_trust_store() {
        Client::new(Duration::from_secs(1)).unwrap();
    }
}
