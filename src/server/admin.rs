//! The proxy's own endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`, `/status.json` and
//! `/debug/identity`. Everything else is proxied and never passes through this router.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const DEBUG_IDENTITY: &str = "/debug/identity";
const METRICS: &str = "/metrics";
const STATUS: &str = "/status";
const STATUS_JSON: &str = "/status.json";

/// Whether a path is one of the proxy's own endpoints (exact match, as the router matches);
/// every other path is proxied without passing through the router.
pub(super) fn is_own_endpoint(path: &str) -> bool {
    matches!(
        path,
        HEALTHZ | READYZ | DEBUG_IDENTITY | METRICS | STATUS | STATUS_JSON
    )
}

/// The proxy's own endpoints (only the paths `is_own_endpoint` accepts reach the router).
/// Public so tests can present a peer address of their choosing in `ConnectInfo`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(HEALTHZ, get(healthz))
        .route(READYZ, get(readyz))
        .route(DEBUG_IDENTITY, get(debug_identity))
        .route(METRICS, get(metrics))
        .route(STATUS, get(status_page))
        .route(STATUS_JSON, get(status_json))
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready once a token for every backend's scope is held.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let state = state.snapshot();
    let mut scopes = Vec::new();
    let mut ready = true;
    for scope in state.config.scopes() {
        let s = state.tokens.status(&scope).await;
        ready &= s.has_valid_token;
        scopes.push(serde_json::json!({
            "scope": s.scope,
            "credential": s.credential,
            "has_token": s.has_valid_token,
            "expires_at": s.expires_at,
            "failing_since": s.failing_since,
            "last_error": s.last_error,
        }));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready: no token yet for every backend scope" },
        "scopes": scopes,
    });
    (status, axum::Json(body)).into_response()
}

/// Prometheus text format: requests, upstream latency, retries, failovers, cooldowns, token
/// acquisitions and seconds until each token expires, in-flight streams.
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let state = app.snapshot();
    for scope in state.config.scopes() {
        let s = state.tokens.status(&scope).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let left = s.expires_at.map_or(0, |e| (e - now).max(0));
        metrics::gauge!("entra_proxy_token_expiry_seconds", "scope" => scope.to_string())
            .set(left as f64);
        metrics::gauge!("entra_proxy_token_valid", "scope" => scope.to_string())
            .set(if s.has_valid_token { 1.0 } else { 0.0 });
    }
    metrics::gauge!("entra_proxy_backends_cooling_down")
        .set(state.routes.backends().cooling_count() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Per backend: the credential, the cached token's claims, expiry, last refresh and last
/// error — never the token. Off unless `[server] debug = true`; then open to loopback clients,
/// or to others presenting the admin key in `x-admin-key`.
async fn debug_identity(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let state = state.snapshot();
    if !state.config.server.debug {
        return crate::error::ProxyError::NoRoute {
            path: "/debug/identity".into(),
            hint: "the debug view is off; set [server] debug = true".into(),
        }
        .into_response();
    }
    if let Err(refused) = admin_only(&state.config, &request, DEBUG_IDENTITY) {
        return refused.into_response();
    }
    let mut backends = Vec::new();
    for b in &state.config.backends {
        let status = state.tokens.status(&b.scope).await;
        backends.push(serde_json::json!({
            "backend": b.name,
            "endpoint": b.endpoint.as_str(),
            "scope": b.scope.as_str(),
            "token": status,
        }));
    }
    axum::Json(serde_json::json!({
        "credential": state.tokens.describe(),
        "backends": backends,
        "client_credential_apps_cached": state.apps.as_ref().map(|a| a.cached_apps()),
    }))
    .into_response()
}

/// The access rule of the admin views: a loopback peer, or the admin key in `x-admin-key`.
fn admin_only(
    config: &crate::config::Config,
    request: &axum::extract::Request,
    endpoint: &'static str,
) -> Result<(), crate::error::ProxyError> {
    let peer_is_loopback = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let admin_ok = match (
        &config.server.admin_key,
        request.headers().get("x-admin-key"),
    ) {
        (Some(digest), Some(v)) => v.to_str().is_ok_and(|k| {
            use subtle::ConstantTimeEq as _;
            bool::from(crate::config::KeyDigest::of(k).0.ct_eq(&digest.0))
        }),
        _ => false,
    };
    if peer_is_loopback || admin_ok {
        Ok(())
    } else {
        Err(crate::error::ProxyError::AdminOnly { endpoint })
    }
}

/// The status page (HTML): always on, under the admin views' access rule (it shows no token).
async fn status_page(
    State(app): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let snapshot = app.snapshot();
    if let Err(refused) = admin_only(&snapshot.config, &request, STATUS) {
        return refused.into_response();
    }
    let view = crate::status::gather(&app).await;
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        crate::status::html(&view),
    )
        .into_response()
}

/// The status page's data as JSON, under the same rule.
async fn status_json(
    State(app): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let snapshot = app.snapshot();
    if let Err(refused) = admin_only(&snapshot.config, &request, STATUS_JSON) {
        return refused.into_response();
    }
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(crate::status::gather(&app).await),
    )
        .into_response()
}
