//! Request → [`Route`]: which backend, which upstream URL, and whether the body changes.
//! Azure-style paths pass through (the body is never parsed); OpenAI-style `/v1/...` paths map
//! `model` through `[[models]]` to a deployment.
//!
//! [`plan()`] classifies the path (`plan.rs`); [`resolve`] hands each [`Plan`] to one function —
//! `azure.rs` for the deployment API, the v1 API and every other service's path, `openai.rs` for
//! `/v1/…` — which takes the places to try from the [`RoutingTable`] (`table.rs`), reads and
//! rewrites the body's model (`model.rs`) and builds each upstream URL (`uri.rs`).
//! [`resolve_websocket`] does the same for a handshake, realtime ones in `websocket.rs`.
//! Outside the tests nothing in this folder imports this file, and the leaves (`plan`, `table`,
//! `model`, `uri`) import no sibling.

use crate::error::ProxyError;
use bytes::Bytes;
use route::Incoming;
use websocket::Realtime;

mod azure;
mod model;
mod openai;
mod plan;
mod route;
mod table;
#[cfg(test)]
mod testing;
mod uri;
mod websocket;

pub use plan::{Plan, plan};
pub use route::{Payload, Route};
pub use table::{BACKEND_HEADER, RoutingTable};
pub use uri::REALTIME_API_VERSION;

/// Resolves a request to the routes to try, in order (never empty). `body` is given only when
/// [`Plan::needs_body`].
pub fn resolve(
    table: &RoutingTable,
    plan: &Plan<'_>,
    path: &str,
    query: Option<&str>,
    chosen_backend: Option<&str>,
    body: Option<&Bytes>,
) -> Result<Vec<Route>, ProxyError> {
    resolve_payload(table, plan, path, query, chosen_backend, body.into())
}

/// [`resolve`], with a multipart form's `model` as well as a JSON one.
pub fn resolve_payload(
    table: &RoutingTable,
    plan: &Plan<'_>,
    path: &str,
    query: Option<&str>,
    chosen_backend: Option<&str>,
    payload: Payload<'_>,
) -> Result<Vec<Route>, ProxyError> {
    let req = Incoming {
        table,
        path,
        query,
        chosen_backend,
        payload,
    };
    dispatch(&req, plan)
}

/// Where a WebSocket handshake goes. Realtime in its three shapes — Azure's
/// `/openai/realtime?deployment=`, the GA `/openai/v1/realtime?model=` and OpenAI's
/// `/v1/realtime?model=` — maps the model through `[[models]]` (the query parameter is rewritten
/// to the deployment); any other path passes through like an HTTP request. `query` comes
/// without credentials.
pub fn resolve_websocket(
    table: &RoutingTable,
    plan: &Plan<'_>,
    path: &str,
    query: Option<&str>,
    chosen_backend: Option<&str>,
) -> Result<Route, ProxyError> {
    let req = Incoming {
        table,
        path,
        query,
        chosen_backend,
        payload: Payload::Absent,
    };
    match Realtime::of(plan) {
        Some(shape) => websocket::realtime(&req, shape),
        None => first_route(dispatch(&req, plan)?, path),
    }
}

/// Each plan to the function that resolves it.
fn dispatch(req: &Incoming<'_>, plan: &Plan<'_>) -> Result<Vec<Route>, ProxyError> {
    match plan {
        Plan::Deployment { deployment, rest } => azure::deployment(req, deployment, rest),
        Plan::AzureV1 { rest } => azure::v1(req, rest),
        Plan::OpenAi { rest } => openai::resolve(req, rest),
        Plan::ListModels => openai::list_models(req),
        Plan::Other { segments } => azure::pass_through(req, segments),
    }
}

/// The one route a WebSocket takes: the first an HTTP request would try.
fn first_route(mut routes: Vec<Route>, path: &str) -> Result<Route, ProxyError> {
    if routes.is_empty() {
        Err(ProxyError::NoRoute {
            path: path.to_string(),
            hint: "no backend serves this request".into(),
        })
    } else {
        Ok(routes.swap_remove(0))
    }
}
