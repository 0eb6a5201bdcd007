//! The proxying handler: authenticate, route, attach the bearer token, stream the request to
//! Azure and the answer back. Inbound credentials and hop-by-hop headers never reach Azure.

use crate::diagnose;
use crate::error::ProxyError;
use crate::identity;
use crate::inbound::{API_KEY, Caller};
use crate::routing::{self, BACKEND_HEADER, Plan, Route};
use crate::state::AppState;
use crate::upstream;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

// Header names are constants, so the request path never parses one from a string.

/// Response header naming the caller (by key name, never the key) on errors.
pub const CALLER_HEADER: HeaderName = HeaderName::from_static("x-entra-proxy-caller");
/// Request id header, echoed on every response and sent upstream as `x-ms-client-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Azure's request id header, which its logs and support tickets quote.
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `host`.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// The proxy handler for every path that is not the proxy's own.
pub async fn handle(state: Arc<AppState>, client: upstream::Client, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let request_id = request_id(request.headers());
    let caller = state.auth.authenticate(request.headers()).await;
    // The caller's label is only needed (as a string) when the request fails.
    let (result, caller_label) = match caller {
        Ok(caller) => {
            let result = proxy(&state, &client, request, &caller, &request_id).await;
            let label = result.is_err().then(|| caller.label().to_string());
            (result, label)
        }
        Err(e) => (Err(e), None),
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(
                request_id = %request_id,
                method = %method,
                path = %path,
                caller = caller_label.as_deref().unwrap_or("-"),
                status = e.status().as_u16(),
                error = %e,
                "rejected"
            );
            let mut r = e.into_response();
            if let Some(label) = caller_label
                .as_deref()
                .and_then(|l| HeaderValue::from_str(l).ok())
            {
                r.headers_mut().insert(CALLER_HEADER, label);
            }
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    tracing::debug!(request_id = %request_id, took_us = started.elapsed().as_micros() as u64, "response head sent");
    response
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A process-unique id: a random per-process prefix and a counter (no system call per request).
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    format!("{prefix}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

async fn proxy(
    state: &AppState,
    client: &upstream::Client,
    request: Request,
    caller: &Caller,
    request_id: &str,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let upstream_cfg = &state.config.upstream;
    let deadline = started + upstream_cfg.request_timeout;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let plan = routing::plan(path)?;
    if plan == Plan::ListModels && parts.method == Method::GET {
        return Ok(list_models(state));
    }
    let limit = state.config.server.max_body_bytes;
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    // Bodies are read whole only where the route needs them (the `model` field) or where a
    // retry may replay them; everything else streams straight through.
    let replay_possible = upstream_cfg.max_attempts > 1
        && declared.is_some_and(|len| len <= upstream_cfg.retry_buffer_bytes as u64);
    // No length and no chunked encoding means no body (RFC 9112 §6.3): nothing to stream.
    let bodyless = declared == Some(0)
        || (declared.is_none() && !parts.headers.contains_key(header::TRANSFER_ENCODING));
    let (buffered, mut streamed) = if plan.needs_body() || replay_possible || bodyless {
        (Some(read_body(body, limit).await?), None)
    } else {
        (None, Some(body))
    };
    let chosen = parts
        .headers
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok());
    let routes = routing::resolve(
        &state.routes,
        &plan,
        path,
        parts.uri.query(),
        chosen,
        buffered.as_ref(),
    )?;
    let first = routes.first().ok_or_else(|| ProxyError::NoRoute {
        path: path.to_string(),
        hint: "no backend serves this request".into(),
    })?;
    if let Some(policy) = caller.policy()
        && !policy.permits(first.model.as_deref(), first.deployment.as_deref())
    {
        return Err(ProxyError::ModelNotAllowed {
            caller: caller.label().to_string(),
            wanted: first
                .model
                .clone()
                .or_else(|| first.deployment.clone())
                .unwrap_or_else(|| format!("path {path}")),
            allowed: policy.models.clone(),
        });
    }

    let replayable = streamed.is_none();
    let max_attempts = if replayable {
        upstream_cfg.max_attempts
    } else {
        1
    };
    let base_headers = upstream_headers(&parts.headers, request_id);
    let mut order: std::collections::VecDeque<usize> = (0..routes.len()).collect();
    let mut attempts = 0u32;
    let mut refreshed = false;
    let mut last: Option<Attempted<'_>> = None;
    let mut last_error: Option<ProxyError> = None;

    loop {
        let next = order
            .iter()
            .position(|&i| state.health.cooling(routes[i].backend).is_none())
            .and_then(|p| order.remove(p));
        let Some(i) = next else {
            // Everything left is cooling down (Azure said "wait"): answer with what we have.
            if let Some(a) = last {
                return Ok(finish(state, a, caller, request_id, path, started).await);
            }
            if let Some(e) = last_error {
                return Err(e);
            }
            let wait = routes
                .iter()
                .filter_map(|r| state.health.cooling(r.backend))
                .min()
                .unwrap_or_default();
            return Err(ProxyError::CoolingDown {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                backends: routes
                    .iter()
                    .map(|r| state.routes.backends()[r.backend].name.clone())
                    .collect(),
            });
        };
        let route = &routes[i];
        let backend = &state.routes.backends()[route.backend];
        attempts += 1;
        if attempts > 1 {
            metrics::counter!("entra_proxy_retries_total", "backend" => backend.name.clone())
                .increment(1);
            if last
                .as_ref()
                .is_some_and(|a| a.route.backend != route.backend)
            {
                metrics::counter!("entra_proxy_failovers_total", "to" => backend.name.clone())
                    .increment(1);
            }
        }
        let permit =
            state
                .health
                .admit(route.backend)
                .await
                .map_err(|b| ProxyError::BackendBusy {
                    backend: b.backend,
                    max_concurrent: b.max_concurrent,
                    waited_ms: b.waited.as_millis() as u64,
                })?;
        let token =
            identity::token_for(&state.tokens, state.apps.as_ref(), caller, backend).await?;

        let mut headers = base_headers.clone();
        headers.insert(header::AUTHORIZATION, token.header().clone());
        let upstream_body = match (&route.body, &buffered) {
            (Some(rewritten), _) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
                upstream::full(rewritten.clone())
            }
            (None, Some(bytes)) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                upstream::full(bytes.clone())
            }
            (None, None) => {
                if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
                    headers.insert(header::CONTENT_LENGTH, len.clone());
                }
                match streamed.take() {
                    Some(body) => upstream::streamed(body, limit),
                    None => upstream::full(Bytes::new()),
                }
            }
        };
        let mut request = axum::http::Request::new(upstream_body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = route.uri.clone();
        *request.headers_mut() = headers;
        let sent_at = Instant::now();
        let remaining = deadline.saturating_duration_since(sent_at);
        let (wait, which) = if remaining < upstream_cfg.first_byte_timeout {
            (remaining, "upstream.request_timeout_secs")
        } else {
            (
                upstream_cfg.first_byte_timeout,
                "upstream.first_byte_timeout_secs",
            )
        };
        let outcome = tokio::time::timeout(wait, client.send(request)).await;
        let more = attempts < max_attempts && Instant::now() < deadline;
        match outcome {
            Err(_) => {
                let e = ProxyError::UpstreamTimeout {
                    backend: backend.name.clone(),
                    limit: which,
                    limit_secs: wait.as_secs_f64(),
                };
                // Azure may be working on it: replay only when configured to.
                if more && upstream_cfg.replay_after_timeout {
                    requeue(&mut order, i);
                    last_error = Some(e);
                    continue;
                }
                return Err(e);
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                let err = upstream_error(e, &backend.name, limit);
                // Nothing reached Azure when the connection failed: safe to try again.
                if connect && more && replayable {
                    requeue(&mut order, i);
                    last_error = Some(err);
                    tokio::time::sleep(retry_pause(attempts)).await;
                    continue;
                }
                return Err(err);
            }
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let mut attempted = Attempted {
                    response,
                    route,
                    token,
                    permit,
                };
                state
                    .request_metrics
                    .upstream_seconds(route.backend, sent_at.elapsed().as_secs_f64());
                if status == 401
                    && !refreshed
                    && replayable
                    && let identity::UpstreamToken::Cached {
                        token: cached,
                        scope,
                    } = &attempted.token
                {
                    // Read Azure's (small) answer: only a refused token is worth a new one;
                    // PermissionDenied, key errors and a wrong audience are not.
                    let (head, body) = attempted.response.into_parts();
                    let body = http_body_util::Limited::new(body, UNAUTHORIZED_BODY_LIMIT)
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let helps = diagnose::refresh_may_help(
                        status,
                        &body,
                        backend.scope.audience(),
                        cached.claims.as_ref(),
                    );
                    attempted.response = upstream::with_read_body(head, body);
                    if !helps {
                        return Ok(
                            finish(state, attempted, caller, request_id, path, started).await
                        );
                    }
                    // Azure refused a cached token (revoked, rotated keys): drop it, get a
                    // fresh one once, replay once.
                    refreshed = true;
                    tracing::warn!(backend = %backend.name, "Azure refused the cached token with 401: refreshing it and replaying once");
                    state.tokens.invalidate(scope, cached).await;
                    if let Some(apps) = &state.apps
                        && let Caller::App(app) = caller
                    {
                        apps.invalidate(app, scope, cached).await;
                    }
                    order.push_front(i);
                    attempts = attempts.saturating_sub(1);
                    continue;
                }
                if matches!(status, 429 | 500 | 502 | 503 | 504) {
                    let wait = crate::backends::retry_after(attempted.response.headers());
                    if let Some(w) = wait {
                        state.health.cool_down(route.backend, w);
                    }
                    if more && replayable {
                        tracing::info!(backend = %backend.name, status, attempt = attempts, retry_after_ms = wait.map(|w| w.as_millis() as u64), "retrying on the next target");
                        if wait.is_none() {
                            requeue(&mut order, i);
                        }
                        last = Some(attempted);
                        tokio::time::sleep(retry_pause(attempts)).await;
                        continue;
                    }
                }
                return Ok(finish(state, attempted, caller, request_id, path, started).await);
            }
        }
    }
}

/// One upstream answer with what produced it.
struct Attempted<'a> {
    response: upstream::Response,
    route: &'a Route,
    token: identity::UpstreamToken,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Puts a route back at the end of the queue unless it is already there.
fn requeue(order: &mut std::collections::VecDeque<usize>, i: usize) {
    if !order.contains(&i) {
        order.push_back(i);
    }
}

/// Largest 401 body read to decide whether a fresh token could help.
const UNAUTHORIZED_BODY_LIMIT: usize = 64 * 1024;

/// A short pause between attempts, growing with each.
fn retry_pause(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(50 * u64::from(attempt.min(10)))
}

async fn finish(
    state: &AppState,
    a: Attempted<'_>,
    caller: &Caller,
    request_id: &str,
    path: &str,
    started: Instant,
) -> Response {
    let backend = &state.routes.backends()[a.route.backend];
    let status = a.response.status().as_u16();
    tracing::info!(
        request_id = %request_id,
        path = %path,
        caller = %caller.label(),
        backend = %backend.name,
        model = a.route.model.as_deref().unwrap_or("-"),
        deployment = a.route.deployment.as_deref().unwrap_or("-"),
        status,
        took_ms = started.elapsed().as_millis() as u64,
        "proxied"
    );
    state
        .request_metrics
        .request(a.route.backend, a.route.model.as_deref(), status);
    downstream_response(state, a.response, a.route, &a.token, caller, a.permit).await
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

/// Copies the client's headers minus credentials, hop-by-hop headers and proxy controls.
pub fn upstream_headers(incoming: &HeaderMap, request_id: &str) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len() + 2);
    let connection_listed = connection_listed(incoming);
    for (name, value) in incoming {
        if HOP_BY_HOP.contains(name)
            || name == API_KEY
            || name == header::AUTHORIZATION
            || name == header::CONTENT_LENGTH
            || name == BACKEND_HEADER
            || connection_listed.contains(name)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if !out.contains_key(CLIENT_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(request_id)
    {
        out.insert(CLIENT_REQUEST_ID, v);
    }
    out
}

/// The header names a `Connection` header lists: they too describe only that connection.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect()
}

/// Azure's headers minus hop-by-hop ones (and those its `Connection` header lists), edited in
/// place. Azure seldom sends any, so the map is only edited when one is there.
fn downstream_headers(mut headers: HeaderMap) -> HeaderMap {
    if headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        for name in connection_listed(&headers) {
            headers.remove(name);
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
    headers
}

async fn downstream_response(
    state: &AppState,
    upstream: upstream::Response,
    route: &Route,
    token: &identity::UpstreamToken,
    caller: &Caller,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Response {
    let status = upstream.status();
    if diagnose::wants(status) {
        // Claims are read only on this (error) path.
        let claims = token.claims();
        let mut headers = downstream_headers(upstream.headers().clone());
        let (body, diagnosis) = diagnose::annotate(state, upstream, route, claims.as_ref()).await;
        if let Some(d) = diagnosis
            && let Ok(v) = HeaderValue::from_str(&d)
        {
            headers.insert(diagnose::DIAGNOSIS_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&caller.label().to_string()) {
            headers.insert(CALLER_HEADER, v);
        }
        headers.remove(header::CONTENT_LENGTH);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }
    let (head, body) = upstream.into_parts();
    let body = Watched::new(
        body,
        state.config.upstream.idle_timeout,
        permit,
        state.request_metrics.inflight_streams(),
    );
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = downstream_headers(head.headers);
    response
}

/// The error for an attempt that got no answer from Azure.
fn upstream_error(e: upstream::Error, backend: &str, limit: usize) -> ProxyError {
    if upstream::body_too_large(&e) {
        return ProxyError::BodyTooLarge { limit };
    }
    let reason = if e.is_connect() {
        format!("cannot connect ({})", root_cause(&e))
    } else {
        root_cause(&e)
    };
    ProxyError::UpstreamUnreachable {
        backend: backend.to_string(),
        reason,
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

fn list_models(state: &AppState) -> Response {
    let data: Vec<serde_json::Value> = state
        .routes
        .model_names()
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "entra-proxy"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// An upstream body on its way to the client: ends with an error after too long a silence,
/// holds the backend's concurrency slot, and counts as an in-flight stream until dropped
/// (finished, failed, or the client went away — which also closes the upstream connection).
/// Frames pass through as they come, and so does the body's size (the client sees Azure's
/// `content-length`).
struct Watched<B> {
    inner: B,
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    inflight: metrics::Gauge,
}

impl<B> Watched<B> {
    fn new(
        inner: B,
        idle: std::time::Duration,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        inflight: metrics::Gauge,
    ) -> Watched<B> {
        inflight.increment(1.0);
        Watched {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
            inflight,
        }
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
                let idle = self.idle;
                self.timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    fn sorted_names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_stripped() {
        let h = headers(&[
            ("api-key", "secret"),
            ("authorization", "Bearer secret"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("host", "proxy"),
            ("x-entra-proxy-backend", "a"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
        ]);
        let out = upstream_headers(&h, "rid-1");
        assert_eq!(
            sorted_names(&out),
            ["accept", "content-type", "x-ms-client-request-id"]
        );
        assert_eq!(out["x-ms-client-request-id"], "rid-1");
    }

    #[test]
    fn hop_by_hop_headers_from_azure_are_dropped_and_the_rest_kept() {
        let kept = headers(&[
            ("content-type", "application/json"),
            ("apim-request-id", "a1"),
        ]);
        assert_eq!(downstream_headers(kept.clone()), kept);

        let mut h = kept;
        h.extend(headers(&[
            ("connection", "keep-alive, X-Azure-Hop"),
            ("x-azure-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
        ]));
        let out = downstream_headers(h);
        assert_eq!(sorted_names(&out), ["apim-request-id", "content-type"]);
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
