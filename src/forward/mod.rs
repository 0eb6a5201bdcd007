//! The proxying handler. One admission sequence for HTTP and WebSocket alike — authenticate
//! ([`handle`]), then route, policy and budgets (`exchange`) — and then the relay: attempts
//! over the routes for HTTP (`http`, under the retry policy of `attempts`), the handshake
//! and frames for a WebSocket (`websocket`); finally the answer, or the proxy's own error
//! (`answer`). Inbound credentials and hop-by-hop headers never reach Azure.

mod answer;
mod attempts;
mod bearer;
mod body;
mod exchange;
mod facts;
mod headers;
mod http;
mod issue;
mod links;
mod multipart;
mod replay;
mod reserve;
mod websocket;

pub(crate) use headers::request_id;
pub use headers::upstream_headers;

use crate::error::ProxyError;
use crate::inbound::Caller;
use crate::routing::{self, Plan};
use crate::state::Snapshot;
use crate::telemetry::trace::RequestSpan;
use crate::upstream;
use axum::extract::Request;
use axum::http::Method;
use axum::http::header::{HeaderName, HeaderValue};
use axum::response::Response;
use exchange::{Asking, Surface};
use std::sync::Arc;
use std::time::Instant;

// Header names are constants, so the request path never parses one from a string.

/// Response header naming the caller (by key name, never the key) on errors.
pub const CALLER_HEADER: HeaderName = HeaderName::from_static("x-entra-proxy-caller");
/// Request id header, echoed on every response and sent upstream as `x-ms-client-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The proxy handler for every path that is not the proxy's own.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its by-value arguments twice"
)]
pub fn handle(
    state: Arc<Snapshot>,
    client: upstream::Client,
    request: Request,
) -> impl Future<Output = Response> + Send {
    // An `async` block, not an `async fn`: an `async fn` keeps each argument twice in its
    // state (as passed, and as the local it is moved to), and the state is moved whole. So do
    // the request path's other steps that take the request or an answer by value.
    async move {
        let started = Instant::now();
        let method = request.method().clone();
        // A reference count, not a copy: the path and (masked) query for the log line.
        let uri = request.uri().clone();
        let request_id = headers::request_id(request.headers());
        let trace = state
            .tracing
            .request(request.headers(), &method, uri.path());
        trace.request_id(&request_id);
        let caller = state
            .auth
            .authenticate_request(request.headers(), request.uri().query())
            .await;
        let (result, caller) = match caller {
            Ok(caller) => {
                trace.caller(&caller);
                let result = serve(&state, &client, request, &caller, &request_id, &trace).await;
                (result, Some(caller))
            }
            Err(e) => (Err(e.into()), None),
        };
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                trace.failed(e.code(), e.status().as_u16());
                let refused = crate::refusal::Refused {
                    request_id: &request_id,
                    method: &method,
                    uri: &uri,
                    caller: caller.as_ref(),
                };
                answer::fail_to_proxy(&state.recent, e, refused)
            }
        };
        // The span ends here, or when a metered answer's body ends.
        trace.status(response.status().as_u16());
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        tracing::debug!(request_id = %request_id, took_us = started.elapsed().as_micros() as u64, "response head sent");
        response
    }
}

/// An authenticated request: admitted by the one sequence, then relayed as what it is.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its by-value arguments twice"
)]
fn serve(
    state: &Snapshot,
    client: &upstream::Client,
    request: Request,
    caller: &Caller,
    request_id: &str,
    trace: &RequestSpan,
) -> impl Future<Output = Result<Response, ProxyError>> {
    async move {
        let started = Instant::now();
        if websocket::is_upgrade(&request) {
            // Boxed, like every path most requests do not take: the handler's future is
            // allocated and moved whole for each request, so its size is what the common path needs.
            return Box::pin(websocket::serve(
                state, client, request, caller, request_id, trace,
            ))
            .await;
        }
        let (parts, body) = request.into_parts();
        if parts.method == Method::GET && routing::plan(parts.uri.path())? == Plan::ListModels {
            return Ok(answer::list_models(state));
        }
        if issue::is_issue_token(&parts.method, parts.uri.path()) {
            return issue::answer(state, caller, request_id, parts.uri.path(), started);
        }
        let asking = Asking {
            state,
            caller,
            parts: &parts,
            trace,
        };
        let admitted = exchange::admit(asking, Surface::Http(body)).await?;
        asking
            .exchange(client, request_id, started, admitted.metering)
            .run(&admitted.routes, &parts, admitted.inbound)
            .await
    }
}
