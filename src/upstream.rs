//! The HTTP client that carries proxied requests to Azure: hyper's pooled client over rustls
//! (the platform's certificate verifier), one per serving thread. Requests and answers stay
//! `http` types from the client's connection to Azure's: no URL re-parsing, header map copies
//! or redirect machinery per request.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

/// Any error a body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What is sent to Azure: bytes in hand, or the client's body streamed (and bounded).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
/// What comes back: Azure's body as it arrives, or one already read (e.g. a 401 inspected to
/// decide on a token refresh).
pub type ResponseBody = Either<hyper::body::Incoming, Full<Bytes>>;
/// One answer from Azure.
pub type Response = http::Response<ResponseBody>;
/// A failure to get an answer (connect, TLS, the connection closing early, a body error).
pub type Error = hyper_util::client::legacy::Error;

/// A pooled client; clones share the pool, and cost one reference count (a request handler
/// gets its own clone).
#[derive(Clone, Debug)]
pub struct Client {
    inner: std::sync::Arc<
        hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, RequestBody>,
    >,
}

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per backend host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

impl Client {
    /// A client with its own connection pool: TLS via rustls and the platform's trust store,
    /// HTTP/2 when Azure offers it (ALPN), HTTP/1.1 otherwise; plain http only for endpoints
    /// configured as such (the local emulator).
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
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Client {
            inner: std::sync::Arc::new(inner),
        })
    }

    /// Sends one request (absolute URI); resolves when Azure's answer head has arrived.
    pub async fn send(&self, request: http::Request<RequestBody>) -> Result<Response, Error> {
        let response = self.inner.request(request).await?;
        Ok(response.map(Either::Left))
    }
}

/// A body already in memory.
pub fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The client's body streamed through, failing once more than `limit` bytes have gone by.
pub fn streamed(body: axum::body::Body, limit: usize) -> RequestBody {
    Limited::new(body, limit).boxed_unsync()
}

/// A response whose body has already been read.
pub fn with_read_body(head: http::response::Parts, body: Bytes) -> Response {
    http::Response::from_parts(head, Either::Right(Full::new(body)))
}

/// Whether sending failed because the streamed request body outgrew its limit.
pub fn body_too_large(e: &Error) -> bool {
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
pub fn content_length(response: &Response) -> Option<u64> {
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
