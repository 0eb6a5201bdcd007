//! The proxy's own endpoints: `/healthz`, `/readyz`, `/metrics`, `/status`, `/status.json`,
//! `/debug/identity`, and `GET /` from loopback (where to look). Everything else is proxied and
//! never passes through this router. Their refusals go through [`crate::refusal`] like the
//! proxied paths' do.

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

const LANDING: &str = "/";

/// Whether a path is one of the proxy's own endpoints (exact match, as the router matches);
/// every other path is proxied without passing through the router.
pub(super) fn is_own_endpoint(path: &str) -> bool {
    matches!(
        path,
        HEALTHZ | READYZ | DEBUG_IDENTITY | METRICS | STATUS | STATUS_JSON
    )
}

/// Whether the router answers this request: one of the own endpoints, or `GET /` from a
/// loopback peer (someone on the proxy's machine looking around). From anywhere else `/` is
/// proxied as any path is (refused without a credential, `no_route` with one): Azure serves
/// nothing there, so no client loses anything, and nothing is shown to the network.
pub(super) fn is_own<B>(request: &axum::http::Request<B>, peer: std::net::SocketAddr) -> bool {
    let path = request.uri().path();
    is_own_endpoint(path)
        || (path == LANDING
            && request.method() == axum::http::Method::GET
            && loopback_peer(peer.ip()))
}

/// Whether a peer is on the proxy's machine: a loopback address, including an IPv4 loopback
/// peer seen as IPv4-mapped (`::ffff:127.0.0.1`) by a listener on `[::]`.
pub(super) fn loopback_peer(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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
        .route(LANDING, get(landing))
        .with_state(state)
}

/// The answer to `GET /` on loopback: where to look, as JSON, or as a small page for a browser.
async fn landing(State(app): State<Arc<AppState>>, request: axum::extract::Request) -> Response {
    let loopback = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| loopback_peer(c.0.ip()));
    if !loopback {
        // Only reached through `router` with another peer (the server proxies `/` from others).
        let e = crate::error::ProxyError::NoRoute {
            path: LANDING.into(),
            hint: "the proxy serves nothing at / to other hosts; see /status from loopback".into(),
        };
        return refuse(&app, e, &request);
    }
    const DOCS: &str = "the user guide: docs/src in the source (Observe, Troubleshoot, Commands); entra-proxy --help";
    let html = request
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        let page = format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>entra-proxy</title><link rel=\"icon\" href=\"{icon}\"></head><body style=\"font-family:system-ui,sans-serif;margin:1rem\">\
<h1>entra-proxy {version}</h1><p>This proxies Azure OpenAI and Azure AI requests \
(<code>/openai/…</code>, <code>/v1/…</code>) with a key or token.</p><ul>\
<li><a href=\"{STATUS}\">{STATUS}</a>: identity, backends, the last refusals and diagnoses, \
the last 15 minutes</li><li><a href=\"{STATUS_JSON}\">{STATUS_JSON}</a>, \
<a href=\"{METRICS}\">{METRICS}</a>, <a href=\"{HEALTHZ}\">{HEALTHZ}</a>, \
<a href=\"{READYZ}\">{READYZ}</a></li><li>Docs: {docs}</li></ul></body></html>\n",
            version = env!("CARGO_PKG_VERSION"),
            docs = crate::status::escape(DOCS),
            icon = crate::status::NO_ICON,
        );
        return (
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response();
    }
    axum::Json(serde_json::json!({
        "service": "entra-proxy",
        "version": env!("CARGO_PKG_VERSION"),
        "status": STATUS,
        "status_json": STATUS_JSON,
        "metrics": METRICS,
        "health": HEALTHZ,
        "ready": READYZ,
        "docs": DOCS,
        "proxied": "Azure OpenAI and Azure AI paths (/openai/..., /v1/...) with a key or token",
    }))
    .into_response()
}

/// The proxy's own refusal of an admin request: answered, logged, counted and recorded as every
/// refusal is ([`crate::refusal`]), with a request id.
fn refuse(
    app: &AppState,
    e: crate::error::ProxyError,
    request: &axum::extract::Request,
) -> Response {
    let request_id = crate::forward::request_id(request.headers());
    let refused = crate::refusal::Refused {
        request_id: &request_id,
        method: request.method(),
        uri: request.uri(),
        caller: None,
    };
    let mut response = crate::refusal::answer(&app.recent, e, refused);
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(crate::forward::REQUEST_ID, v);
    }
    response
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
    let app = state;
    let state = app.snapshot();
    if !state.config.server.debug {
        let off = crate::error::ProxyError::NoRoute {
            path: "/debug/identity".into(),
            hint: "the debug view is off; set [server] debug = true".into(),
        };
        return refuse(&app, off, &request);
    }
    if let Err(refused) = admin_only(&state.config, &request, DEBUG_IDENTITY) {
        return refuse(&app, refused, &request);
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
        .is_some_and(|c| loopback_peer(c.0.ip()));
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
        return refuse(&app, refused, &request);
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
        return refuse(&app, refused, &request);
    }
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(crate::status::gather(&app).await),
    )
        .into_response()
}

#[cfg(test)]
mod loopback_tests {
    use super::loopback_peer;

    #[test]
    fn an_ipv4_mapped_loopback_peer_is_loopback_and_other_mapped_peers_are_not() {
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1", "::ffff:127.3.2.1"] {
            assert!(loopback_peer(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:127.0.0.1",
            "fe80::1",
        ] {
            assert!(!loopback_peer(ip.parse().unwrap()), "{ip}");
        }
    }
}
