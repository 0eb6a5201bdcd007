//! The one admission sequence, the same for HTTP and WebSocket: route the request (reading its
//! body where routing or the budget needs it), apply the caller's policy, then count it against
//! its budgets. A request refused by routing or policy is never counted. What comes out is an
//! [`Exchange`]: the admitted request, which a relay carries to Azure.

use super::body::Inbound;
use super::multipart;
use crate::backends::BackendEntry;
use crate::error::ProxyError;
use crate::identity::{self, UpstreamToken};
use crate::inbound::{Caller, Held};
use crate::limits::{Account, Admissions, Admitted, Reservation};
use crate::metering::estimate::{self, Estimate};
use crate::routing::{self, BACKEND_HEADER, Plan, Route, RoutingTable};
use crate::state::Snapshot;
use crate::telemetry::trace::RequestSpan;
use crate::upstream;
use axum::body::Body;
use axum::http::header::{self, HeaderValue};
use axum::http::request;
use std::time::Instant;

/// One authenticated request on its way: what every step after admission reads.
pub(super) struct Exchange<'a> {
    pub(super) state: &'a Snapshot,
    pub(super) client: &'a upstream::Client,
    pub(super) caller: &'a Caller,
    pub(super) request_id: &'a str,
    pub(super) path: &'a str,
    /// The client's query as sent: logged only through [`crate::inbound::query::Masked`].
    pub(super) query: Option<&'a str>,
    /// The authority the client addressed (`Host`, or the URI's for HTTP/2): where links in
    /// answers point when `[server] public_url` is not set.
    pub(super) authority: Option<&'a str>,
    pub(super) started: Instant,
    /// No attempt starts after this (`upstream.request_timeout_secs`).
    pub(super) deadline: Instant,
    /// The caller's budget and what the answer's usage is charged to.
    pub(super) metering: Metering,
    /// The request's server span (nothing when traces are off).
    pub(super) trace: &'a RequestSpan,
}

/// What the answer's usage is read for: the admission to settle (callers with a budget), the
/// prompt estimate, whether the proxy asked Azure for a usage chunk the client did not.
pub(super) struct Metering {
    /// Taken by the answer that settles them; dropped unsettled when no answer is metered.
    pub(super) admissions: Admissions,
    pub(super) admitted: Option<Admitted>,
    pub(super) estimate: Estimate,
    pub(super) hide_usage_chunk: bool,
}

/// The request as the relays see it once admitted: where it may go, in order (never empty),
/// and its body.
pub(super) struct Cleared {
    pub(super) routes: Vec<Route>,
    pub(super) inbound: Inbound,
    pub(super) metering: Metering,
}

/// What the request came as: the body is only read for HTTP.
pub(super) enum Surface {
    Http(Body),
    WebSocket,
}

/// Who is asking, and where: what the sequence's steps read of the request.
#[derive(Clone, Copy)]
pub(super) struct Asking<'a> {
    pub(super) state: &'a Snapshot,
    pub(super) caller: &'a Caller,
    pub(super) parts: &'a request::Parts,
    pub(super) trace: &'a RequestSpan,
}

impl<'a> Asking<'a> {
    /// The admitted request, for its relay: HTTP's attempts or a WebSocket's handshake.
    pub(super) fn exchange(
        self,
        client: &'a upstream::Client,
        request_id: &'a str,
        started: Instant,
        metering: Metering,
    ) -> Exchange<'a> {
        Exchange {
            state: self.state,
            client,
            caller: self.caller,
            request_id,
            path: self.parts.uri.path(),
            query: self.parts.uri.query(),
            authority: authority(self.parts),
            started,
            deadline: started + self.state.config.upstream.request_timeout,
            metering,
            trace: self.trace,
        }
    }
}

/// The admission sequence: route → policy → budgets.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` holds its by-value arguments twice"
)]
pub(super) fn admit(
    asking: Asking<'_>,
    surface: Surface,
) -> impl Future<Output = Result<Cleared, ProxyError>> {
    async move {
        let Asking {
            state,
            caller,
            parts,
            trace,
        } = asking;
        let path = parts.uri.path();
        let plan = routing::plan(path)?;
        let budget = budget_of(caller);
        let (inbound, routes) = match surface {
            Surface::Http(body) => route_http(state, parts, &plan, body, budget).await?,
            Surface::WebSocket => route_websocket(&state.routes, parts, &plan)?,
        };
        let first = &routes[0];
        trace.route(path, first.model.as_deref().or(first.deployment.as_deref()));
        policy(caller, first, path)?;
        let asked = Budgets {
            state,
            account: budget,
            user: caller.user.as_ref(),
            routes: &routes,
            path,
        };
        let (inbound, metering) = budgets(asked, inbound).await?;
        Ok(Cleared {
            routes,
            inbound,
            metering,
        })
    }
}

/// The account a caller is counted against: its budget and counters.
fn budget_of(caller: &Caller) -> Option<&Account> {
    caller.policy().map(|policy| &policy.account)
}

/// An HTTP request's routes, with its body read as far as routing or the budget needs it.
async fn route_http(
    state: &Snapshot,
    parts: &request::Parts,
    plan: &Plan<'_>,
    body: Body,
    budget: Option<&Account>,
) -> Result<(Inbound, Vec<Route>), ProxyError> {
    let server = &state.config.server;
    if let Some(boundary) = plan
        .needs_form_model()
        .then(|| multipart::boundary(&parts.headers))
        .flatten()
    {
        let limit = server.max_body_bytes;
        return Box::pin(form_upload(
            &state.routes,
            parts,
            plan,
            body,
            &boundary,
            limit,
        ))
        .await;
    }
    // Kept even without retries: a request Azure's closed keep-alive connection never
    // processed is always sent again.
    let replay_limit = Some(state.config.upstream.retry_buffer_bytes);
    // A budget of tokens or money needs the body: for the reservation and to ask for usage.
    let needs_body = plan.needs_body() || budget.is_some_and(|a| a.budget().reserves());
    let inbound = Inbound::take(
        &parts.headers,
        body,
        needs_body,
        replay_limit,
        server.max_body_bytes,
    )
    .await?;
    // A body kept only for replay or metering (an upload) is not routing's to read.
    let payload = match plan.needs_body() {
        true => inbound.bytes().into(),
        false => routing::Payload::Absent,
    };
    let routes = upstream_peers(&state.routes, parts, plan, payload)?;
    Ok((inbound, routes))
}

/// A WebSocket handshake's route: it has no body.
fn route_websocket(
    table: &RoutingTable,
    parts: &request::Parts,
    plan: &Plan<'_>,
) -> Result<(Inbound, Vec<Route>), ProxyError> {
    let path = parts.uri.path();
    let query = crate::inbound::query::without_credentials(parts.uri.query());
    let route =
        routing::resolve_websocket(table, plan, path, query.as_deref(), chosen_backend(parts))?;
    Ok((Inbound::Read(bytes::Bytes::new()), vec![route]))
}

/// The authority the client addressed: its `Host` header, or the request URI's (HTTP/2).
fn authority(parts: &request::Parts) -> Option<&str> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// The backend a client chose with [`BACKEND_HEADER`].
fn chosen_backend(parts: &request::Parts) -> Option<&str> {
    parts
        .headers
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// A multipart upload whose `model` names the deployment: read up to that field, routed by it,
/// the rest streamed (see [`multipart`]).
async fn form_upload(
    table: &RoutingTable,
    parts: &request::Parts,
    plan: &Plan<'_>,
    body: Body,
    boundary: &str,
    limit: usize,
) -> Result<(Inbound, Vec<Route>), ProxyError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let peeked = multipart::peek(body, boundary).await?;
    let model = peeked.model.as_ref().map(|(m, _)| m.as_str());
    let routes = upstream_peers(table, parts, plan, routing::Payload::Form(model))?;
    let first = &routes[0];
    let v1 = table.backends()[first.backend].config.api == crate::config::ApiShape::V1;
    let mut prefix = peeked.prefix.clone();
    if let (true, Some((m, range)), Some(d)) = (v1, &peeked.model, &first.deployment)
        && m != d
    {
        prefix = multipart::rewrite(&peeked.prefix, range, d);
    }
    let length = declared.map(|len| {
        let len = len + prefix.len() as u64 - peeked.prefix.len() as u64;
        HeaderValue::from(len)
    });
    let inbound = Inbound::Streamed {
        body: Some(multipart::rejoin(prefix, peeked.rest)),
        length,
    };
    Ok((inbound, routes))
}

/// The routes to try, in order; never empty.
fn upstream_peers(
    table: &RoutingTable,
    parts: &request::Parts,
    plan: &Plan<'_>,
    body: routing::Payload<'_>,
) -> Result<Vec<Route>, ProxyError> {
    let path = parts.uri.path();
    // A key in the query string never travels on.
    let query = crate::inbound::query::without_credentials(parts.uri.query());
    let routes = routing::resolve_payload(
        table,
        plan,
        path,
        query.as_deref(),
        chosen_backend(parts),
        body,
    )?;
    if routes.is_empty() {
        return Err(ProxyError::NoRoute {
            path: path.to_string(),
            hint: "no backend serves this request".into(),
        });
    }
    Ok(routes)
}

/// The caller's policy: whether it may use the model or deployment of the first route.
fn policy(caller: &Caller, first: &Route, path: &str) -> Result<(), ProxyError> {
    let Some(policy) = caller.policy() else {
        return Ok(());
    };
    if policy.permits(first.model.as_deref(), first.deployment.as_deref()) {
        return Ok(());
    }
    Err(ProxyError::ModelNotAllowed {
        caller: caller.label().to_string(),
        wanted: first
            .model
            .clone()
            .or_else(|| first.deployment.clone())
            .unwrap_or_else(|| format!("path {path}")),
        allowed: policy.models.clone(),
    })
}

/// What a request is counted against: its caller's account and its user's (either may be
/// absent), and where it may go.
struct Budgets<'a> {
    state: &'a Snapshot,
    account: Option<&'a Account>,
    user: Option<&'a Account>,
    routes: &'a [Route],
    path: &'a str,
}

/// The caller's budgets: when its tokens or money are limited, sizes what the request may use
/// (the prompt estimate and the room for its answer) and reserves it, with the request, in its
/// caller's and its user's budgets at once (or refuses it before anything is sent), and asks
/// Azure for the usage of a stream. Otherwise the request is only counted, and the estimate
/// waits for an answer whose usage cannot be read.
async fn budgets(
    asked: Budgets<'_>,
    mut inbound: Inbound,
) -> Result<(Inbound, Metering), ProxyError> {
    let Budgets {
        state,
        account,
        user,
        routes,
        path,
    } = asked;
    let reserves = [account, user]
        .into_iter()
        .flatten()
        .any(|a| a.budget().reserves());
    let (estimate, sizing, reservation) = match reserves {
        true => {
            let (estimate, sizing) = Estimate::sized(inbound.bytes());
            let default = state.config.limits.default_completion_reservation;
            let r = super::reserve::reservation(&state.tariffs, routes, path, sizing, default);
            (estimate, Some(sizing), r)
        }
        false => (Estimate::later(inbound.bytes()), None, Reservation::NONE),
    };
    let admissions = Admissions::admit(account, user, &reservation)
        .await
        .map_err(|e| e.in_currency(&state.config.currency))?;
    let injected = match (inbound.bytes(), sizing) {
        (Some(b), Some(sizing)) => estimate::ask_usage(b, &sizing),
        _ => None,
    };
    let hide_usage_chunk = injected.is_some();
    if let Some(body) = injected {
        inbound = Inbound::Read(body);
    }
    let metering = Metering {
        admitted: admissions.admitted().copied(),
        admissions,
        estimate,
        hide_usage_chunk,
    };
    Ok((inbound, metering))
}

impl Exchange<'_> {
    /// The backend of `route`, with its health and metric handles.
    pub(super) fn backend(&self, route: &Route) -> &BackendEntry {
        &self.state.routes.backends()[route.backend]
    }

    /// The bearer for an attempt on `backend`, inside the token-lookup span: the proxy's
    /// cached token, the caller's own, or an app's.
    pub(super) async fn token(&self, backend: &BackendEntry) -> Result<UpstreamToken, ProxyError> {
        let state = self.state;
        let mut span = self.trace.token_lookup(backend.config.scope.as_str());
        let bearers = super::bearer::Bearers {
            tokens: &state.tokens,
            apps: state.apps.as_ref(),
            obo: state.obo.as_ref(),
        };
        let found = super::bearer::token_lookup(bearers, self.caller, &backend.config).await;
        match found {
            Ok((token, lookup)) => {
                span.token(lookup.name(), || match &self.caller.held {
                    Held::App(_) => "client credentials".to_string(),
                    Held::Entra {
                        use_: crate::inbound::EntraUse::OnBehalfOf,
                        ..
                    } => state.obo.as_ref().map_or_else(String::new, |o| {
                        format!("on behalf of the user: {}", o.describe())
                    }),
                    _ if lookup == identity::Lookup::Passthrough => "caller's token".to_string(),
                    _ => state.tokens.describe(),
                });
                Ok(token)
            }
            Err(e) => {
                span.failed(e.code());
                Err(e)
            }
        }
    }
}
