//! The axum router, health and readiness routes, and serving with graceful shutdown.

use crate::forward;
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

mod balance;

/// What one serving thread's requests see: the shared state, and the thread's own upstream
/// client. A connection pool per thread keeps a request and the upstream connection carrying it
/// on the same thread: no hand-off between threads on the hot path.
#[derive(Debug, Clone)]
pub struct Worker {
    pub state: Arc<AppState>,
    pub client: crate::upstream::Client,
}

const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const DEBUG_IDENTITY: &str = "/debug/identity";
const METRICS: &str = "/metrics";
const STATUS: &str = "/status";
const STATUS_JSON: &str = "/status.json";

/// Whether a path is one of the proxy's own endpoints (exact match, as the router matches);
/// every other path is proxied without passing through the router.
fn is_own_endpoint(path: &str) -> bool {
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

/// Serves until `shutdown` resolves (or this future is dropped), then stops accepting and
/// drains in-flight requests and streams for up to the configured grace period. Starts the
/// background token keeper for every backend scope on the caller's runtime.
///
/// Requests are served by `server.workers` threads, each running its own single-threaded event
/// loop that accepts from the shared listening socket and owns an upstream connection pool;
/// connections are spread evenly over the threads (see `balance`).
/// Tokens, keys, routes and backend health are shared by all.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let keeper = state.tokens.spawn_keeper(state.watch_scopes());
    // Settings read once here need a restart to change (see `crate::reload`).
    let server_config = state.snapshot().config.clone();
    let _stop_keeper = AbortOnDrop(keeper);
    let listener = listener.into_std()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every worker counts its WebSockets here, so `server.max_websockets` is per proxy.
    let websockets = crate::upstream::WebSockets::new();
    let mut finished = tokio::task::JoinSet::new();
    let (balance, inboxes) = balance::Balance::new(server_config.server.workers.get());
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let socket = listener.try_clone()?;
        let client = crate::upstream::Client::new(server_config.upstream.connect_timeout)
            .map_err(std::io::Error::other)?
            .with_websockets(websockets.clone());
        let worker = Worker {
            state: state.clone(),
            client,
        };
        let (done, exited) = tokio::sync::oneshot::channel();
        let stopped = stopped.clone();
        let seat = Seat {
            index,
            balance: balance.clone(),
            inbox,
        };
        std::thread::Builder::new()
            .name(format!("entra-proxy-{index}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| rt.block_on(work(socket, worker, seat, stopped)));
                let _ = done.send(result);
            })?;
        finished.spawn(async move {
            exited.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "a serving thread stopped unexpectedly",
                ))
            })
        });
    }
    drop(listener);
    // Serve until told to stop, unless a worker fails first (its error is the answer).
    let early = tokio::select! {
        () = shutdown => None,
        first = finished.join_next() => first,
    };
    tracing::info!(
        grace_secs = state.snapshot().config.server.shutdown_grace.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop.send(true);
    let mut result = Ok(());
    if let Some(outcome) = early {
        record(&mut result, outcome);
    }
    while let Some(outcome) = finished.join_next().await {
        record(&mut result, outcome);
    }
    // The spans of the last requests go out before the process ends.
    state.tracing.flush(TRACE_FLUSH).await;
    result
}

/// Longest wait at shutdown for the last spans to reach the collector.
const TRACE_FLUSH: Duration = Duration::from_secs(5);

/// Keeps the first error among the workers' outcomes.
fn record(
    result: &mut std::io::Result<()>,
    outcome: Result<std::io::Result<()>, tokio::task::JoinError>,
) {
    let outcome = outcome.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if result.is_ok() {
        *result = outcome;
    }
}

/// Aborts a background task when dropped (e.g. when `serve` is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A serving thread's place among the others: its index, the shared balance, and its inbox of
/// connections other threads accepted for it.
struct Seat {
    index: usize,
    balance: Arc<balance::Balance>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<balance::Handoff>,
}

/// One worker: accepts connections (keeping each unless another thread serves fewer) and
/// serves its own until `stopped` turns true (or its sender is gone), then drains for the
/// grace period.
async fn work(
    socket: std::net::TcpListener,
    worker: Worker,
    mut seat: Seat,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use futures_util::FutureExt as _;
    use futures_util::future::Either;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use tower::ServiceExt as _;

    let listener = TcpListener::from_std(socket)?;
    // This thread's request timeouts (hyper's header read, the first byte from Azure) and
    // their ticker (crate::deadline), which ends with the thread's runtime.
    let deadlines = crate::deadline::Deadlines::default();
    tokio::spawn(deadlines.clone().run());
    let worker = Worker {
        client: worker.client.with_deadlines(deadlines.clone()),
        ..worker
    };
    let snapshot = worker.state.snapshot();
    let server = &snapshot.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(server.max_header_bytes)
        .timer(crate::deadline::HyperTimer(deadlines))
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .max_header_list_size(server.max_header_bytes.min(u32::MAX as usize) as u32)
        .timer(TokioTimer::new());
    let app = router(worker.state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer, counted) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match keep_or_hand_off(&seat, stream, peer) {
                    Some(kept) => kept,
                    None => continue,
                },
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(handed) = seat.inbox.recv() => match tokio::net::TcpStream::from_std(handed.stream) {
                Ok(stream) => (stream, handed.peer, handed.counted),
                Err(e) => {
                    tracing::warn!(error = %e, "could not take over a connection from another serving thread");
                    continue;
                }
            },
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let worker = worker.clone();
        // Proxied requests go straight to the handler: the router (path matching, boxed
        // services) is only for the proxy's own endpoints.
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                if is_own_endpoint(request.uri().path()) {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    Either::Left(app.clone().oneshot(request))
                } else {
                    // Boxed: a connection keeps its in-flight slot for as long as it lives,
                    // and the handler's state is kilobytes that only a request in flight needs.
                    let handled = Box::pin(forward::handle(
                        worker.state.snapshot(),
                        worker.client.clone(),
                        request,
                    ));
                    Either::Right(handled.map(Ok::<_, std::convert::Infallible>))
                }
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(counted);
        });
    }
    drop(listener);
    // Connections still on their way here are closed; new ones stay with their acceptor.
    drop(seat.inbox);
    // The grace period as configured now: it follows reloads.
    let grace = worker.state.snapshot().config.server.shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing remaining connections");
    }
    // Upgraded connections are no longer hyper's: WebSockets still open at the end of the
    // drain period are closed with 1001.
    worker.client.websockets().drain(deadline).await;
    Ok(())
}

/// A connection this thread accepted: kept (with its place in this thread's count) when no
/// other thread serves fewer, else handed to the one that does (`None`).
fn keep_or_hand_off(
    seat: &Seat,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    balance::Counted,
)> {
    let counted = seat.balance.place(seat.index);
    if counted.worker() == seat.index {
        return Some((stream, peer, counted));
    }
    // Out of this thread's event loop, into the other's (where `from_std` registers it).
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, %peer, "could not hand a connection to another serving thread; closing it");
            return None;
        }
    };
    let handoff = balance::Handoff {
        stream,
        peer,
        counted,
    };
    // That thread has stopped serving: serve it here.
    let back = seat.balance.hand_off(handoff).err()?;
    drop(back.counted);
    let counted = seat.balance.count(seat.index);
    match tokio::net::TcpStream::from_std(back.stream) {
        Ok(stream) => Some((stream, back.peer, counted)),
        Err(e) => {
            tracing::warn!(error = %e, %peer, "could not take a connection back; closing it");
            None
        }
    }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives while the proxy is still
/// starting is then a graceful stop, not the default action (an abrupt exit).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(term) => {},
                () = recv(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
