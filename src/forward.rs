//! The proxying handler: authenticate, route, attach the bearer token, stream the request to
//! Azure and the answer back. Inbound credentials and hop-by-hop headers never reach Azure.

use crate::diagnose;
use crate::error::ProxyError;
use crate::identity;
use crate::inbound::{API_KEY, Caller};
use crate::routing::{self, BACKEND_HEADER, Plan, Route};
use crate::server::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use http_body_util::BodyExt as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Response header naming the caller (by key name, never the key) on errors.
pub const CALLER_HEADER: &str = "x-entra-proxy-caller";
/// Request id header, echoed on every response and sent upstream as `x-ms-client-request-id`.
pub const REQUEST_ID: &str = "x-request-id";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `host`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The proxy handler for every path that is not the proxy's own.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let request_id = request_id(request.headers());
    let caller = state.auth.authenticate(request.headers()).await;
    let caller_label = caller.as_ref().map(Caller::label).ok();
    let result = match caller {
        Ok(caller) => proxy(&state, request, &caller, &request_id).await,
        Err(e) => Err(e),
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
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

async fn proxy(
    state: &AppState,
    request: Request,
    caller: &Caller,
    request_id: &str,
) -> Result<Response, ProxyError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let plan = routing::plan(path)?;
    if plan == Plan::ListModels && parts.method == Method::GET {
        return Ok(list_models(state));
    }
    let limit = state.config.server.max_body_bytes;
    if let Some(len) = content_length(&parts.headers)
        && len > limit as u64
    {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let (buffered, body) = if plan.needs_body() {
        (Some(read_body(body, limit).await?), None)
    } else {
        (None, Some(body))
    };
    let chosen = parts
        .headers
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok());
    let route = routing::resolve(
        &state.routes,
        &plan,
        path,
        parts.uri.query(),
        chosen,
        buffered.as_ref(),
    )?;
    if let Some(policy) = caller.policy()
        && !policy.permits(route.model.as_deref(), route.deployment.as_deref())
    {
        return Err(ProxyError::ModelNotAllowed {
            caller: caller.label(),
            wanted: route
                .model
                .clone()
                .or_else(|| route.deployment.clone())
                .unwrap_or_else(|| format!("path {path}")),
            allowed: policy.models.clone(),
        });
    }
    let backend = &state.routes.backends()[route.backend];
    let token = identity::token_for(&state.tokens, state.apps.as_ref(), caller, backend).await?;

    let mut headers = upstream_headers(&parts.headers, request_id);
    headers.insert(header::AUTHORIZATION, token.header().clone());
    let upstream_body = match (&route.body, buffered) {
        (Some(rewritten), _) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
            reqwest::Body::from(rewritten.clone())
        }
        (None, Some(bytes)) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            reqwest::Body::from(bytes)
        }
        (None, None) => {
            if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
                headers.insert(header::CONTENT_LENGTH, len.clone());
            }
            match body {
                Some(body) => {
                    reqwest::Body::wrap_stream(Limit::new(body.into_data_stream(), limit))
                }
                None => reqwest::Body::from(Bytes::new()),
            }
        }
    };
    let upstream = state
        .client
        .request(parts.method.clone(), route.url.clone())
        .headers(headers)
        .body(upstream_body);

    let started = Instant::now();
    let sent =
        tokio::time::timeout(state.config.upstream.first_byte_timeout, upstream.send()).await;
    let response = match sent {
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                backend: backend.name.clone(),
                limit: "upstream.first_byte_timeout_secs",
                limit_secs: state.config.upstream.first_byte_timeout.as_secs_f64(),
            });
        }
        Ok(Err(e)) => return Err(upstream_error(e, &backend.name, limit)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    tracing::info!(
        request_id = %request_id,
        method = %parts.method,
        path = %path,
        caller = %caller.label(),
        backend = %backend.name,
        model = route.model.as_deref().unwrap_or("-"),
        deployment = route.deployment.as_deref().unwrap_or("-"),
        status = status.as_u16(),
        upstream_ms = started.elapsed().as_millis() as u64,
        "proxied"
    );
    Ok(downstream_response(state, response, &route, &token.claims(), caller).await)
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
    let connection_listed: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in incoming {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || n == API_KEY
            || n == header::AUTHORIZATION.as_str()
            || n == header::CONTENT_LENGTH.as_str()
            || n == BACKEND_HEADER
            || connection_listed.iter().any(|c| c == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if !out.contains_key("x-ms-client-request-id")
        && let Ok(v) = HeaderValue::from_str(request_id)
    {
        out.insert(HeaderName::from_static("x-ms-client-request-id"), v);
    }
    out
}

fn downstream_headers(incoming: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

async fn downstream_response(
    state: &AppState,
    upstream: reqwest::Response,
    route: &Route,
    claims: &Option<crate::claims::Claims>,
    caller: &Caller,
) -> Response {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = downstream_headers(upstream.headers());
    if diagnose::wants(status) {
        let (body, diagnosis) = diagnose::annotate(state, upstream, route, claims.as_ref()).await;
        if let Some(d) = diagnosis
            && let Ok(v) = HeaderValue::from_str(&d)
        {
            headers.insert(diagnose::DIAGNOSIS_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&caller.label()) {
            headers.insert(CALLER_HEADER, v);
        }
        headers.remove(header::CONTENT_LENGTH);
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }
    let stream = upstream.bytes_stream().map_err(std::io::Error::other);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn upstream_error(e: reqwest::Error, backend: &str, limit: usize) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.downcast_ref::<TooLarge>().is_some() {
            return ProxyError::BodyTooLarge { limit };
        }
        source = s.source();
    }
    let reason = if e.is_connect() {
        format!("cannot connect ({})", root_cause(&e))
    } else if e.is_timeout() {
        "timed out".to_string()
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

/// The request body grew past the limit while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
struct TooLarge(usize);

/// Passes a body stream through, failing once more than `limit` bytes have gone by.
struct Limit<S> {
    inner: S,
    seen: usize,
    limit: usize,
}

impl<S> Limit<S> {
    fn new(inner: S, limit: usize) -> Limit<S> {
        Limit {
            inner,
            seen: 0,
            limit,
        }
    }
}

impl<S> Stream for Limit<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len();
                if self.seen > self.limit {
                    Poll::Ready(Some(Err(Box::new(TooLarge(self.limit)))))
                } else {
                    Poll::Ready(Some(Ok(chunk)))
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("api-key", HeaderValue::from_static("secret"));
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-custom-hop"),
        );
        h.insert("x-custom-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("host", HeaderValue::from_static("proxy"));
        h.insert("x-entra-proxy-backend", HeaderValue::from_static("a"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("accept", HeaderValue::from_static("text/event-stream"));
        let out = upstream_headers(&h, "rid-1");
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(out.contains_key("content-type"));
        assert!(out.contains_key("accept"));
        assert_eq!(out["x-ms-client-request-id"], "rid-1");
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
