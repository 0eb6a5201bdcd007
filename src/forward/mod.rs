//! The proxying handler as named steps: authenticate the caller ([`handle`]), apply its policy,
//! plan the route, then attempts — each one picks a peer, rewrites the request, sends it and
//! sorts Azure's answer — and finally the answer (or failure) for the client. Inbound
//! credentials and hop-by-hop headers never reach Azure. What to retry is decided by
//! `attempts::Attempts`; this module only applies its decisions.

mod answer;
mod attempts;
mod body;
mod headers;
mod multipart;
mod replay;
pub mod usage;
mod usage_scan;
mod websocket;

pub use headers::upstream_headers;

use crate::diagnose;
use crate::error::ProxyError;
use crate::identity::{self, UpstreamToken};
use crate::inbound::Caller;
use crate::routing::{self, BACKEND_HEADER, Plan, Route};
use crate::state::Snapshot;
use crate::telemetry::RetryReason;
use crate::telemetry::trace::{ChildSpan, RequestSpan};
use crate::upstream;
use attempts::{Attempts, Decision, Limits, Next, Outcome, Stop};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, request};
use axum::response::Response;
use body::Inbound;
use http_body_util::BodyExt as _;
use std::sync::Arc;
use std::time::Instant;

// Header names are constants, so the request path never parses one from a string.

/// Response header naming the caller (by key name, never the key) on errors.
pub const CALLER_HEADER: HeaderName = HeaderName::from_static("x-entra-proxy-caller");
/// Request id header, echoed on every response and sent upstream as `x-ms-client-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest 401 body read to decide whether a fresh token could help.
const UNAUTHORIZED_BODY_LIMIT: usize = 64 * 1024;

/// One authenticated request on its way: what every step after authentication reads.
struct Exchange<'a> {
    state: &'a Snapshot,
    client: &'a upstream::Client,
    caller: &'a Caller,
    request_id: &'a str,
    path: &'a str,
    /// The client's query as sent: logged only through [`crate::inbound::query::Masked`].
    query: Option<&'a str>,
    started: Instant,
    /// No attempt starts after this (`upstream.request_timeout_secs`).
    deadline: Instant,
    /// The key's budget and what the answer's usage is charged to.
    metering: Metering,
    /// The request's server span (nothing when traces are off).
    trace: &'a RequestSpan,
}

/// What the answer's usage is read for: the admission to settle (key callers only), the prompt
/// estimate, whether the proxy asked Azure for a usage chunk the client did not.
struct Metering {
    /// Taken by the answer that settles it; dropped unsettled when no answer is metered.
    admission: Option<crate::limits::Admission>,
    admitted: Option<crate::limits::Admitted>,
    estimate: usage::Estimate,
    hide_usage_chunk: bool,
}

/// One upstream answer with what produced it.
struct Attempted<'a> {
    response: upstream::Response,
    route: &'a Route,
    token: UpstreamToken,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The outcome of one attempt, as the retry policy sees it.
type AttemptOutcome<'r> = Outcome<Attempted<'r>, ProxyError>;

/// Azure's answer as first sorted: an outcome, or a 401 whose body must be read to know.
enum Sorted<'r> {
    Outcome(AttemptOutcome<'r>),
    ReadRefusal(Attempted<'r>),
}

/// The proxy handler for every path that is not the proxy's own.
pub async fn handle(state: Arc<Snapshot>, client: upstream::Client, request: Request) -> Response {
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
    // The caller's label is only needed (as a string) when the request fails.
    let (result, caller_label) = match caller {
        Ok(caller) => {
            trace.caller(&caller);
            let result = proxy(&state, &client, request, &caller, &request_id, &trace).await;
            let label = result.is_err().then(|| caller.label().to_string());
            (result, label)
        }
        Err(e) => (Err(e.into()), None),
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            trace.failed(e.code(), e.status().as_u16());
            answer::fail_to_proxy(e, &request_id, &method, &uri, caller_label.as_deref())
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

/// An authenticated request: plan, policy, body, routes, then the attempts.
async fn proxy(
    state: &Snapshot,
    client: &upstream::Client,
    request: Request,
    caller: &Caller,
    request_id: &str,
    trace: &RequestSpan,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let upstream_cfg = &state.config.upstream;
    if websocket::is_upgrade(&request) {
        // Boxed, like every path most requests do not take: the handler's future is
        // allocated and moved whole for each request, so its size is what the common path needs.
        return Box::pin(websocket::open(
            state, client, request, caller, request_id, trace,
        ))
        .await;
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let plan = routing::plan(path)?;
    if plan == Plan::ListModels && parts.method == Method::GET {
        return Ok(answer::list_models(state));
    }
    // Kept even without retries: a request Azure's closed keep-alive connection never
    // processed is always sent again.
    let replay_limit = Some(upstream_cfg.retry_buffer_bytes);
    let limit = state.config.server.max_body_bytes;
    let key = key_of(caller);
    // A key with token limits needs the body: for the estimate and to ask for usage.
    let needs_body = plan.needs_body() || key.is_some_and(|a| a.budget().limits_tokens());
    let form = plan
        .needs_form_model()
        .then(|| multipart::boundary(&parts.headers))
        .flatten();
    let (inbound, routes, metering) = match form {
        Some(boundary) => {
            let (mut inbound, routes) =
                Box::pin(form_upload(state, &parts, &plan, body, &boundary)).await?;
            let metering = admit(key, &mut inbound).await?;
            (inbound, routes, metering)
        }
        None => {
            let mut inbound =
                Inbound::take(&parts.headers, body, needs_body, replay_limit, limit).await?;
            let metering = admit(key, &mut inbound).await?;
            // A body kept only for replay or metering (an upload) is not routing's to read.
            let payload = match plan.needs_body() {
                true => inbound.bytes().into(),
                false => routing::Payload::Absent,
            };
            let routes = upstream_peers(state, &parts, &plan, payload)?;
            (inbound, routes, metering)
        }
    };
    trace.route(
        path,
        routes[0]
            .model
            .as_deref()
            .or(routes[0].deployment.as_deref()),
    );
    request_filter(caller, &routes[0], path)?;
    let mut exchange = Exchange {
        state,
        client,
        caller,
        request_id,
        path,
        query: parts.uri.query(),
        started,
        deadline: started + upstream_cfg.request_timeout,
        metering,
        trace,
    };
    exchange.run(&routes, &parts, inbound).await
}

/// A multipart upload whose `model` names the deployment: read up to that field, routed by it,
/// the rest streamed (see [`multipart`]).
async fn form_upload(
    state: &Snapshot,
    parts: &request::Parts,
    plan: &Plan,
    body: axum::body::Body,
    boundary: &str,
) -> Result<(Inbound, Vec<Route>), ProxyError> {
    let limit = state.config.server.max_body_bytes;
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
    let routes = upstream_peers(state, parts, plan, routing::Payload::Form(model))?;
    let first = &routes[0];
    let v1 = state.routes.backends()[first.backend].config.api == crate::config::ApiShape::V1;
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

/// The account of the key a caller used: its budget and counters.
fn key_of(caller: &Caller) -> Option<&crate::limits::Account> {
    caller.policy().map(|policy| &policy.account)
}

/// The key's limits: counts the request (or refuses it before anything is sent), estimating
/// the prompt first when the key's tokens are limited, and asks Azure for the usage of a
/// stream when they are. Otherwise the estimate waits for an answer whose usage cannot be read.
async fn admit(
    key: Option<&crate::limits::Account>,
    inbound: &mut Inbound,
) -> Result<Metering, ProxyError> {
    let limits_tokens = key.is_some_and(|account| account.budget().limits_tokens());
    let estimate = match limits_tokens {
        true => usage::Estimate::now(inbound.bytes()),
        false => usage::Estimate::later(inbound.bytes()),
    };
    let Some(account) = key else {
        return Ok(Metering {
            admission: None,
            admitted: None,
            estimate,
            hide_usage_chunk: false,
        });
    };
    let admission = account.admit(estimate.made()).await?;
    let injected = match inbound.bytes() {
        Some(b) if limits_tokens => usage::inject_include_usage(b),
        _ => None,
    };
    let hide_usage_chunk = injected.is_some();
    if let Some(body) = injected {
        *inbound = Inbound::Read(body);
    }
    Ok(Metering {
        admitted: Some(*admission.admitted()),
        admission: Some(admission),
        estimate,
        hide_usage_chunk,
    })
}

/// The routes to try, in order; never empty.
fn upstream_peers(
    state: &Snapshot,
    parts: &request::Parts,
    plan: &Plan,
    body: routing::Payload<'_>,
) -> Result<Vec<Route>, ProxyError> {
    let path = parts.uri.path();
    let chosen = parts
        .headers
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok());
    // A key in the query string never travels on.
    let query = crate::inbound::query::without_credentials(parts.uri.query());
    let routes =
        routing::resolve_payload(&state.routes, plan, path, query.as_deref(), chosen, body)?;
    if routes.is_empty() {
        return Err(ProxyError::NoRoute {
            path: path.to_string(),
            hint: "no backend serves this request".into(),
        });
    }
    Ok(routes)
}

/// The caller's policy: whether it may use the model or deployment of the first route.
fn request_filter(caller: &Caller, first: &Route, path: &str) -> Result<(), ProxyError> {
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

impl Exchange<'_> {
    /// Makes attempts over `routes` until the retry policy says what the client gets.
    async fn run(
        &mut self,
        routes: &[Route],
        parts: &request::Parts,
        mut inbound: Inbound,
    ) -> Result<Response, ProxyError> {
        let upstream_cfg = &self.state.config.upstream;
        let backends = self.state.routes.backends();
        let safe_to_repeat = replay::safe_to_repeat(
            &parts.method,
            routes[0].uri.path(),
            inbound.bytes().map(|b| &b[..]),
        );
        let mut attempts = Attempts::new(
            routes.len(),
            Limits {
                max_attempts: upstream_cfg.max_attempts,
                deadline: self.deadline,
                replayable: inbound.is_replayable(),
                replay_after_timeout: upstream_cfg.replay_after_timeout,
                safe_to_replay: safe_to_repeat,
            },
        );
        // Why the next attempt is made, and where the last one went.
        let mut retrying: Option<RetryReason> = None;
        let mut last_backend = None;
        // The client's headers, cleaned: made once for the first attempt (most requests make
        // only one), again for each later one.
        let mut first_headers = Some(upstream_headers(&parts.headers, self.request_id));
        loop {
            let cooling = |i: usize| backends[routes[i].backend].health.cooling().is_some();
            let next = match attempts.next(cooling) {
                Next::Try(next) => next,
                Next::Stop(Stop::Answer(a)) => return Ok(self.finish(a).await),
                Next::Stop(Stop::Error(e)) => return Err(e),
                Next::Stop(Stop::CoolingDown) => {
                    return Err(answer::cooling_down(backends, routes));
                }
            };
            let route = &routes[next.route];
            if let Some(reason) = retrying.take() {
                let failover = last_backend.is_some_and(|b| b != route.backend);
                backends[route.backend].metrics.retry(reason, failover);
            }
            last_backend = Some(route.backend);
            let sending = Sending {
                route,
                headers: first_headers
                    .take()
                    .unwrap_or_else(|| upstream_headers(&parts.headers, self.request_id)),
                parts,
                may_refresh: attempts.may_refresh(),
                safe_to_repeat,
            };
            let mut span = self.trace.attempt(
                next.attempt,
                backends[route.backend].name(),
                backends[route.backend].config.host(),
                route.deployment.as_deref(),
            );
            let (outcome, answered_at) = self
                .attempt(sending, &mut inbound, &mut span)
                .await
                .inspect_err(|e| span.failed(e.code()))?;
            if let Some(wait) = outcome.cool_down() {
                span.cooldown(wait);
                backends[route.backend].cool_down(wait);
            }
            let reason = retry_reason(&outcome);
            let overloaded = match &outcome {
                Outcome::Overloaded {
                    answer,
                    retry_after,
                } => Some((answer.response.status().as_u16(), *retry_after)),
                _ => None,
            };
            match attempts.on(outcome, answered_at) {
                Decision::Answer(a) => return Ok(self.finish(a).await),
                Decision::Fail(e) => return Err(e),
                Decision::Refresh(refused) => {
                    span.retry(RetryReason::TokenRefused.name());
                    retrying = Some(RetryReason::TokenRefused);
                    Box::pin(self.refresh(refused)).await;
                }
                Decision::Retry { pause } => {
                    span.retry(reason.map_or("failed", RetryReason::name));
                    retrying = reason;
                    drop(span);
                    if let Some((status, wait)) = overloaded {
                        tracing::info!(backend = %backends[route.backend].name(), status, attempt = next.attempt, retry_after_ms = wait.map(|w| w.as_millis() as u64), "retrying on the next target");
                    }
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }
}

/// Why an outcome that is retried was not the answer (`entra_proxy.retry.reason`, and the
/// `reason` of `entra_proxy_retries_total`); `None` for outcomes never retried.
fn retry_reason(outcome: &AttemptOutcome<'_>) -> Option<RetryReason> {
    match outcome {
        Outcome::TimedOut(_) => Some(RetryReason::Timeout),
        Outcome::ConnectFailed(_) => Some(RetryReason::ConnectFailed),
        Outcome::Stale(_) => Some(RetryReason::StaleConnection),
        Outcome::Reset(_) => Some(RetryReason::Reset),
        Outcome::Refused { .. } => Some(RetryReason::TokenRefused),
        Outcome::Overloaded { .. } => Some(RetryReason::Overloaded),
        Outcome::Failed(_) | Outcome::Answered(_) => None,
    }
}

/// What one attempt sends, and where.
struct Sending<'r, 'p> {
    route: &'r Route,
    /// The client's headers, cleaned, for this attempt.
    headers: HeaderMap,
    parts: &'p request::Parts,
    /// Whether a 401 could still earn a fresh token (so its body is worth reading).
    may_refresh: bool,
    /// Whether the request may be sent twice ([`replay::safe_to_repeat`]).
    safe_to_repeat: bool,
}

impl Exchange<'_> {
    /// One attempt: a slot on the backend, a token, the request sent, the answer sorted.
    /// Returns when Azure's answer head came (or the attempt failed). Errs when the attempt
    /// could not start (backend busy, no token).
    async fn attempt<'r>(
        &self,
        mut sending: Sending<'r, '_>,
        inbound: &mut Inbound,
        span: &mut ChildSpan,
    ) -> Result<(AttemptOutcome<'r>, Instant), ProxyError> {
        let upstream_cfg = &self.state.config.upstream;
        let route = sending.route;
        let backend = &self.state.routes.backends()[route.backend];
        let permit = backend.admit().await.map_err(|b| ProxyError::BackendBusy {
            backend: b.backend,
            max_concurrent: b.max_concurrent,
            waited_ms: b.waited.as_millis() as u64,
        })?;
        let state = self.state;
        let token = self.token(backend).await?;
        let request = self.upstream_request(&mut sending, inbound, &token, span);
        let sent_at = Instant::now();
        let (wait, which) =
            attempts::answer_timeout(sent_at, self.deadline, upstream_cfg.first_byte_timeout);
        let sent = self.client.send_by(request, sent_at + wait).await;
        let answered_at = Instant::now();
        let outcome = match sent {
            Err(_) => Outcome::TimedOut(ProxyError::UpstreamTimeout {
                backend: backend.name().to_string(),
                limit: which,
                limit_secs: wait.as_secs_f64(),
            }),
            Ok(Err(e)) => {
                let limit = state.config.server.max_body_bytes;
                let replayable = inbound.is_replayable();
                answer::failed_attempt(e, backend.name(), limit, replayable, sending.safe_to_repeat)
            }
            Ok(Ok(response)) => {
                backend
                    .metrics
                    .upstream_seconds(sent_at.elapsed().as_secs_f64());
                span.status(response.status().as_u16());
                let attempted = Attempted {
                    response,
                    route,
                    token,
                    permit,
                };
                match self.response_filter(attempted, sending.may_refresh) {
                    Sorted::Outcome(outcome) => outcome,
                    // Boxed: a 401 is rare, and reading it would size every request's future.
                    Sorted::ReadRefusal(refused) => Box::pin(self.read_refusal(refused)).await,
                }
            }
        };
        if let Outcome::TimedOut(e)
        | Outcome::ConnectFailed(e)
        | Outcome::Stale(e)
        | Outcome::Reset(e)
        | Outcome::Failed(e) = &outcome
        {
            span.failed(e.code());
        }
        Ok((outcome, answered_at))
    }

    /// The bearer for this attempt, inside the token-lookup span.
    async fn token(
        &self,
        backend: &crate::backends::BackendEntry,
    ) -> Result<UpstreamToken, ProxyError> {
        let state = self.state;
        let mut span = self.trace.token_lookup(backend.config.scope.as_str());
        let found = identity::token_lookup(
            &state.tokens,
            state.apps.as_ref(),
            self.caller,
            &backend.config,
        )
        .await;
        match found {
            Ok((token, lookup)) => {
                span.token(lookup.name(), || match self.caller {
                    Caller::App(_) => "client credentials".to_string(),
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

    /// The request for one attempt: the client's headers (already cleaned) with the bearer
    /// token, the body, the route's URL.
    fn upstream_request(
        &self,
        sending: &mut Sending<'_, '_>,
        inbound: &mut Inbound,
        token: &UpstreamToken,
        span: &ChildSpan,
    ) -> axum::http::Request<upstream::RequestBody> {
        let mut headers = std::mem::take(&mut sending.headers);
        headers.insert(header::AUTHORIZATION, token.header().clone());
        span.propagate(&mut headers);
        let limit = self.state.config.server.max_body_bytes;
        let body = inbound.for_attempt(sending.route.body.as_ref(), &mut headers, limit);
        let mut request = axum::http::Request::new(body);
        *request.method_mut() = sending.parts.method.clone();
        *request.uri_mut() = sending.route.uri.clone();
        *request.headers_mut() = headers;
        request
    }

    /// Sorts Azure's answer for the retry policy; hands back a 401 for a cached token when a
    /// fresh token could still be tried, for [`Exchange::read_refusal`].
    fn response_filter<'r>(&self, attempted: Attempted<'r>, may_refresh: bool) -> Sorted<'r> {
        let status = attempted.response.status().as_u16();
        if status == 401 && may_refresh && matches!(attempted.token, UpstreamToken::Cached { .. }) {
            return Sorted::ReadRefusal(attempted);
        }
        if matches!(status, 429 | 500 | 502 | 503 | 504) {
            let retry_after = crate::backends::retry_after(attempted.response.headers());
            return Sorted::Outcome(Outcome::Overloaded {
                answer: attempted,
                retry_after,
            });
        }
        Sorted::Outcome(Outcome::Answered(attempted))
    }

    /// A 401 for a cached token, read (it is small) to decide whether a fresh token could
    /// help: only a refused token is worth a new one; PermissionDenied, key errors and a wrong
    /// audience are not.
    async fn read_refusal<'r>(&self, mut attempted: Attempted<'r>) -> AttemptOutcome<'r> {
        let status = attempted.response.status().as_u16();
        let backend = &self.state.routes.backends()[attempted.route.backend];
        let (head, body) = attempted.response.into_parts();
        let body = http_body_util::Limited::new(body, UNAUTHORIZED_BODY_LIMIT)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let claims = match &attempted.token {
            UpstreamToken::Cached { token, .. } => token.claims.as_ref(),
            UpstreamToken::Passthrough(_) => None,
        };
        let refresh_may_help =
            diagnose::refresh_may_help(status, &body, backend.config.scope.audience(), claims);
        attempted.response = upstream::with_read_body(head, body);
        Outcome::Refused {
            answer: attempted,
            refresh_may_help,
        }
    }

    /// Azure refused a cached token (revoked, rotated keys): drops it, so the replay gets a
    /// fresh one.
    async fn refresh(&self, refused: Attempted<'_>) {
        let backend = &self.state.routes.backends()[refused.route.backend];
        tracing::warn!(backend = %backend.name(), "Azure refused the cached token with 401: refreshing it and replaying once");
        let UpstreamToken::Cached { token, scope } = &refused.token else {
            return;
        };
        self.state.tokens.invalidate(scope, token).await;
        if let Some(apps) = &self.state.apps
            && let Caller::App(app) = self.caller
        {
            apps.invalidate(app, scope, token).await;
        }
    }
}
