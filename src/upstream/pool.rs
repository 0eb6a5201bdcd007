//! One worker's connections to the backends, used from the worker's own thread: idle HTTP/1.1
//! senders kept per host and taken back when an answer's body has been read, and one shared
//! HTTP/2 connection per host where ALPN chose `h2`. A request is handed straight to its
//! connection's sender: no checkout race, no task spawned per request, the `Host` header built
//! once per host.

use super::{BoxError, RequestBody};
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept per host.
const MAX_IDLE_PER_HOST: usize = 256;
/// Sends of one request on reused connections that closed before it left (the race between a
/// server closing an idle connection and a request taking it), before a new connection.
const STALE_TRIES: usize = 3;

/// A worker's connections, by host.
pub(crate) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    hosts: Mutex<Vec<Host>>,
}

/// The connections to one scheme and authority.
struct Host {
    scheme: Scheme,
    authority: Authority,
    /// `Host` of HTTP/1.1 requests: the authority without a default port.
    host_header: HeaderValue,
    /// Most recently used last.
    idle: Vec<Idle>,
    h2: Option<http2::SendRequest<RequestBody>>,
}

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// A connection ready for one request.
enum Conn {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

/// Azure's answer body; an HTTP/1.1 connection goes back to the pool once it has been read.
pub struct PooledBody {
    inner: Incoming,
    back: Option<GiveBack>,
}

struct GiveBack {
    pool: Arc<Pool>,
    host: usize,
    sender: http1::SendRequest<RequestBody>,
}

/// A failure to get an answer: connecting (TCP, TLS, handshake) or sending.
#[derive(Debug)]
pub struct Error {
    kind: Failure,
    source: BoxError,
}

/// When a request failed, as far as it tells what Azure may have done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: nothing reached Azure.
    Connect,
    /// A kept-alive connection was closed (or reset) by Azure with no byte of an answer: the
    /// race between Azure closing an idle connection and a request taking it. Azure did not
    /// process the request.
    Stale,
    /// A new connection was reset or closed after the request was sent, before any byte of
    /// an answer: Azure may have processed it.
    Reset,
    /// Anything else (a request body that failed, a protocol error).
    Other,
}

impl Host {
    /// A connection ready for a request, if one is open: the shared HTTP/2 one, else the most
    /// recently used idle HTTP/1.1 one.
    fn checkout(&mut self) -> Option<Conn> {
        if let Some(h2) = &self.h2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            self.h2 = None;
        }
        let now = Instant::now();
        while let Some(idle) = self.idle.pop() {
            if now.duration_since(idle.since) > IDLE_FOR {
                // The rest are older still.
                self.idle.clear();
                return None;
            }
            if idle.sender.is_ready() {
                return Some(Conn::H1(idle.sender));
            }
        }
        None
    }
}

impl Pool {
    pub(crate) fn new(connector: HttpsConnector<HttpConnector>) -> Pool {
        Pool {
            connector,
            hosts: Mutex::new(Vec::new()),
        }
    }

    /// Sends one request (absolute URI); resolves when the answer head has arrived.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    pub(crate) fn send(
        self: &Arc<Self>,
        mut request: http::Request<RequestBody>,
    ) -> impl Future<Output = Result<http::Response<PooledBody>, Error>> {
        async move {
            let uri = request.uri().clone();
            let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                return Err(Error::connect(format!("not an absolute URI: {uri}").into()));
            };
            let (host, host_header, mut idle) = self.take(scheme, authority)?;
            let mut stale = 0;
            loop {
                let (conn, reused) = match idle.take() {
                    Some(conn) => (conn, true),
                    // Boxed: a connect (and TLS handshake) is rare next to requests on open
                    // connections, and its state would size every request's future.
                    None => (Box::pin(self.connect(host, &uri)).await?, false),
                };
                let sent = match conn {
                    Conn::H1(mut sender) => {
                        request
                            .headers_mut()
                            .insert(http::header::HOST, host_header.clone());
                        *request.uri_mut() = origin_form(&uri);
                        match sender.try_send_request(request).await {
                            Ok(response) => {
                                let back = GiveBack {
                                    pool: self.clone(),
                                    host,
                                    sender,
                                };
                                return Ok(response.map(|inner| PooledBody {
                                    inner,
                                    back: Some(back),
                                }));
                            }
                            Err(e) => e,
                        }
                    }
                    Conn::H2(mut sender) => {
                        request.headers_mut().remove(http::header::HOST);
                        *request.uri_mut() = uri.clone();
                        match sender.try_send_request(request).await {
                            Ok(response) => {
                                return Ok(response.map(|inner| PooledBody { inner, back: None }));
                            }
                            Err(e) => e,
                        }
                    }
                };
                let mut failed = sent;
                match failed.take_message() {
                    // The connection closed before the request left: safe to send it again.
                    Some(unsent) if reused && stale < STALE_TRIES => {
                        stale += 1;
                        request = unsent;
                        idle = self.checkout(host);
                    }
                    _ => return Err(Error::send(failed.into_error(), reused)),
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Host>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host's index and `Host` header (registering the host on first use), and an open
    /// connection to it if there is one: one lock per request.
    fn take(
        &self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<(usize, HeaderValue, Option<Conn>), Error> {
        let mut hosts = self.lock();
        if let Some(i) = hosts
            .iter()
            .position(|h| h.authority == *authority && h.scheme == *scheme)
        {
            let header = hosts[i].host_header.clone();
            return Ok((i, header, hosts[i].checkout()));
        }
        let default_port = match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        let header = match authority.port_u16() {
            Some(port) if Some(port) != default_port => {
                HeaderValue::from_str(&format!("{}:{port}", authority.host()))
            }
            _ => HeaderValue::from_str(authority.host()),
        }
        .map_err(|e| Error::connect(Box::new(e)))?;
        hosts.push(Host {
            scheme: scheme.clone(),
            authority: authority.clone(),
            host_header: header.clone(),
            idle: Vec::new(),
            h2: None,
        });
        Ok((hosts.len() - 1, header, None))
    }

    /// An open connection to host number `host`, if there is one.
    fn checkout(&self, host: usize) -> Option<Conn> {
        self.lock().get_mut(host)?.checkout()
    }

    /// Opens a connection to `uri`'s host: HTTP/2 when ALPN chose it (then shared by the
    /// worker's requests to that host), HTTP/1.1 otherwise. Its task runs on this thread.
    async fn connect(&self, host: usize, uri: &Uri) -> Result<Conn, Error> {
        use tower::ServiceExt as _;
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(Error::connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| Error::connect(Box::new(e)))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if let Some(h) = self.lock().get_mut(host) {
                h.h2 = Some(sender.clone());
            }
            return Ok(Conn::H2(sender));
        }
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| Error::connect(Box::new(e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn::H1(sender))
    }

    /// An HTTP/1.1 connection whose answer has been read, for the next request to `host`.
    fn put(&self, host: usize, sender: http1::SendRequest<RequestBody>) {
        let mut hosts = self.lock();
        let Some(host) = hosts.get_mut(host) else {
            return;
        };
        let now = Instant::now();
        if host
            .idle
            .first()
            .is_some_and(|oldest| now.duration_since(oldest.since) > IDLE_FOR)
        {
            host.idle.remove(0);
        }
        if host.idle.len() < MAX_IDLE_PER_HOST {
            host.idle.push(Idle { sender, since: now });
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// `/path?query` of an absolute URI: what an HTTP/1.1 request line carries.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

impl GiveBack {
    /// Back to the pool when the connection can carry another request; when it is still
    /// finishing this one (rare: the answer was read before the request was fully written),
    /// once it can; never when it is closing.
    fn give_back(self) {
        if self.sender.is_ready() {
            self.pool.put(self.host, self.sender);
        } else if !self.sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let GiveBack {
                pool,
                host,
                mut sender,
            } = self;
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.put(host, sender);
                }
            });
        }
    }
}

impl PooledBody {
    /// A body on a connection of its own (a WebSocket handshake's answer).
    pub(crate) fn unpooled(inner: Incoming) -> PooledBody {
        PooledBody { inner, back: None }
    }

    /// Gives the connection back once the body has been read to its end.
    fn ended(&mut self) {
        if let Some(back) = self.back.take() {
            back.give_back();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            // A read error leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Read to its end without reaching `None` (its length was known): reusable. Dropped
        // half-read: hyper closes the connection, so it is not given back.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").finish_non_exhaustive()
    }
}

impl Error {
    fn connect(source: BoxError) -> Error {
        Error {
            kind: Failure::Connect,
            source,
        }
    }

    /// A failure once the request had left on a connection (`reused`: one kept alive from an
    /// earlier request).
    fn send(source: hyper::Error, reused: bool) -> Error {
        let kind = match (closed_before_answer(&source), reused) {
            (true, true) => Failure::Stale,
            (true, false) => Failure::Reset,
            (false, _) => Failure::Other,
        };
        Error {
            kind,
            source: Box::new(source),
        }
    }

    /// Whether no connection could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        self.kind == Failure::Connect
    }

    /// What the failure says about whether Azure may have processed the request.
    pub fn failure(&self) -> Failure {
        self.kind
    }
}

/// Whether Azure closed or reset the connection before any answer came: hyper's "connection
/// closed before message completed", or a reset, aborted or broken connection underneath.
fn closed_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Failure::Connect => write!(f, "cannot connect: {}", self.source),
            Failure::Stale => write!(
                f,
                "Azure closed the kept-alive connection as the request was sent: {}",
                self.source
            ),
            Failure::Reset => write!(
                f,
                "the connection was reset after the request was sent, before any answer: {}",
                self.source
            ),
            Failure::Other => write!(f, "request failed: {}", self.source),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An HTTP/1.1 server on loopback that counts its connections; it answers `close` to a
    /// request with `x-close` by closing the connection after the answer.
    async fn server() -> (Uri, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|request: http::Request<Incoming>| async move {
                            let close = request.headers().contains_key("x-close");
                            let host = request.headers()[http::header::HOST].clone();
                            let mut response =
                                http::Response::new(http_body_util::Full::new(Bytes::from(
                                    format!("{} {}", request.uri(), host.to_str().unwrap()),
                                )));
                            if close {
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}/a/b?c=d").parse().unwrap(), accepted)
    }

    fn pool() -> Arc<Pool> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .unwrap()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Arc::new(Pool::new(https))
    }

    async fn get(pool: &Arc<Pool>, uri: &Uri, close: bool) -> String {
        let mut request = http::Request::new(super::super::full(Bytes::new()));
        *request.uri_mut() = uri.clone();
        if close {
            request
                .headers_mut()
                .insert("x-close", HeaderValue::from_static("1"));
        }
        let response = pool.send(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_read_answer_gives_its_connection_to_the_next_request() {
        let (uri, accepted) = server().await;
        let pool = pool();
        let authority = uri.authority().unwrap().to_string();
        for _ in 0..3 {
            assert_eq!(
                get(&pool, &uri, false).await,
                format!("/a/b?c=d {authority}"),
                "origin-form request line and the Host header"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_reused() {
        let (uri, accepted) = server().await;
        let pool = pool();
        get(&pool, &uri, true).await;
        // Let the connection's task see the close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        get(&pool, &uri, false).await;
        get(&pool, &uri, false).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_half_read_answer_does_not_give_its_connection_back() {
        let (uri, accepted) = server().await;
        let pool = pool();
        let mut request = http::Request::new(super::super::full(Bytes::new()));
        *request.uri_mut() = uri.clone();
        let response = pool.send(request).await.unwrap();
        drop(response);
        get(&pool, &uri, false).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut request = http::Request::new(super::super::full(Bytes::new()));
        *request.uri_mut() = format!("http://{addr}/").parse().unwrap();
        let e = pool().send(request).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
    }

    #[test]
    fn origin_form_keeps_the_path_and_query() {
        let uri: Uri = "https://a.openai.azure.com/openai/x?api-version=1"
            .parse()
            .unwrap();
        assert_eq!(origin_form(&uri), "/openai/x?api-version=1");
        assert_eq!(origin_form(&"http://h".parse().unwrap()), "/");
    }
}
