//! The HTTP relay: attempts over an admitted request's routes until the retry policy
//! ([`super::attempts`]) says what the client gets. Each attempt takes a slot on the backend
//! and a bearer, sends the request with the client's credentials and hop-by-hop headers
//! removed, and sorts Azure's answer; a 401 to a cached token is read to decide on a refresh.

use super::attempts::{self, Attempts, Decision, Limits, Next, Outcome, Stop};
use super::body::Inbound;
use super::exchange::Exchange;
use super::headers::upstream_headers;
use super::replay;
use crate::backends::{BackendId, Backends};
use crate::diagnose;
use crate::error::ProxyError;
use crate::identity::UpstreamToken;
use crate::inbound::Held;
use crate::routing::Route;
use crate::telemetry::RetryReason;
use crate::telemetry::trace::ChildSpan;
use crate::upstream;
use axum::http::header::HeaderMap;
use axum::http::request;
use axum::response::Response;
use http_body_util::BodyExt as _;
use std::time::Instant;

/// Largest 401 body read to decide whether a fresh token could help.
const UNAUTHORIZED_BODY_LIMIT: usize = 64 * 1024;

/// One upstream answer with what produced it.
pub(super) struct Attempted<'a> {
    pub(super) response: upstream::Response,
    pub(super) route: &'a Route,
    pub(super) token: UpstreamToken,
    pub(super) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The outcome of one attempt, as the retry policy sees it.
pub(super) type AttemptOutcome<'r> = Outcome<Attempted<'r>, ProxyError>;

/// Azure's answer as first sorted: an outcome, or a 401 whose body must be read to know.
enum Sorted<'r> {
    Outcome(AttemptOutcome<'r>),
    ReadRefusal(Attempted<'r>),
}

/// What the attempts of one request remember from one attempt to the next.
struct Trip<'r> {
    attempts: Attempts<Attempted<'r>, ProxyError>,
    /// Why the next attempt is made, when it is a retry.
    retrying: Option<RetryReason>,
    /// Where the last attempt went (to tell a failover).
    last_backend: Option<BackendId>,
    /// The client's headers, cleaned, for the first attempt (most requests make only one);
    /// made again for each later one.
    first_headers: Option<HeaderMap>,
    /// Whether the request may be sent twice ([`replay::safe_to_repeat`]).
    safe_to_repeat: bool,
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
    /// Makes attempts over `routes` until the retry policy says what the client gets.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    pub(super) fn run(
        &mut self,
        routes: &[Route],
        parts: &request::Parts,
        mut inbound: Inbound,
    ) -> impl Future<Output = Result<Response, ProxyError>> {
        async move {
            let mut trip = self.trip(routes, parts, &inbound);
            let answer = loop {
                let cooling = |i: usize| self.backend(&routes[i]).health.cooling().is_some();
                let next = match trip.attempts.next(cooling) {
                    Next::Try(next) => next,
                    Next::Stop(Stop::Answer(a)) => break a,
                    Next::Stop(Stop::Error(e)) => return Err(e),
                    Next::Stop(Stop::CoolingDown) => {
                        return Err(cooling_down(self.state.routes.backends(), routes));
                    }
                };
                let route = &routes[next.route];
                trip.count_retry(self, route);
                let headers = trip
                    .first_headers
                    .take()
                    .unwrap_or_else(|| upstream_headers(&parts.headers, self.request_id));
                let sending = Sending {
                    route,
                    headers,
                    parts,
                    may_refresh: trip.attempts.may_refresh(),
                    safe_to_repeat: trip.safe_to_repeat,
                };
                let backend = self.backend(route);
                let mut span = self.trace.attempt(
                    next.attempt,
                    backend.name(),
                    backend.config.host(),
                    route.deployment.as_deref(),
                );
                let (outcome, answered_at) = self
                    .attempt(sending, &mut inbound, &mut span)
                    .await
                    .inspect_err(|e| span.failed(e.code()))?;
                match self
                    .decide(&mut trip, route, outcome, answered_at, span)
                    .await
                {
                    Step::Answer(a) => break a,
                    Step::Fail(e) => return Err(e),
                    Step::Next => {}
                }
            };
            // One place awaits the answer's filters, not each way to it: every await point of a
            // future holds its own state.
            Ok(self.finish(answer).await)
        }
    }

    /// The attempts of a request over `routes`, under the upstream settings.
    fn trip<'r>(&self, routes: &'r [Route], parts: &request::Parts, inbound: &Inbound) -> Trip<'r> {
        let upstream_cfg = &self.state.config.upstream;
        let body = inbound.bytes().map(|b| &b[..]);
        let safe_to_repeat = replay::safe_to_repeat(&parts.method, routes[0].uri.path(), body);
        let limits = Limits {
            max_attempts: upstream_cfg.max_attempts,
            deadline: self.deadline,
            replayable: inbound.is_replayable(),
            replay_after_timeout: upstream_cfg.replay_after_timeout,
            safe_to_replay: safe_to_repeat,
        };
        Trip {
            attempts: Attempts::new(routes.len(), limits),
            retrying: None,
            last_backend: None,
            first_headers: Some(upstream_headers(&parts.headers, self.request_id)),
            safe_to_repeat,
        }
    }

    /// Applies the retry policy's decision on an attempt's outcome: the client's answer or
    /// error, or the next attempt after a refresh or a pause.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    fn decide<'r>(
        &mut self,
        trip: &mut Trip<'r>,
        route: &'r Route,
        outcome: AttemptOutcome<'r>,
        answered_at: Instant,
        mut span: ChildSpan,
    ) -> impl Future<Output = Step<'r>> {
        async move {
            let backend = self.backend(route);
            if let Some(wait) = outcome.cool_down() {
                span.cooldown(wait);
                backend.cool_down(wait);
            }
            let reason = retry_reason(&outcome);
            let overloaded = match &outcome {
                Outcome::Overloaded {
                    answer,
                    retry_after,
                } => Some((answer.response.status().as_u16(), *retry_after)),
                _ => None,
            };
            match trip.attempts.on(outcome, answered_at) {
                Decision::Answer(a) => Step::Answer(a),
                Decision::Fail(e) => Step::Fail(e),
                Decision::Refresh(refused) => {
                    span.retry(RetryReason::TokenRefused.name());
                    trip.retrying = Some(RetryReason::TokenRefused);
                    Box::pin(self.refresh(refused)).await;
                    Step::Next
                }
                Decision::Retry { pause } => {
                    span.retry(reason.map_or("failed", RetryReason::name));
                    trip.retrying = reason;
                    drop(span);
                    if let Some((status, wait)) = overloaded {
                        tracing::info!(backend = %backend.name(), status, retry_after_ms = wait.map(|w| w.as_millis() as u64), "retrying on the next target");
                    }
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                    Step::Next
                }
            }
        }
    }
}

/// What the retry policy made of an attempt's outcome.
enum Step<'r> {
    /// Azure's answer, for the client.
    Answer(Attempted<'r>),
    /// The client's error.
    Fail(ProxyError),
    /// The next attempt, after a refresh or a pause.
    Next,
}

impl Trip<'_> {
    /// Counts the attempt about to go to `route` when it is a retry, and a failover when the
    /// attempt before went to another backend.
    fn count_retry(&mut self, exchange: &Exchange<'_>, route: &Route) {
        if let Some(reason) = self.retrying.take() {
            let failover = self.last_backend.is_some_and(|b| b != route.backend);
            exchange.backend(route).metrics.retry(reason, failover);
        }
        self.last_backend = Some(route.backend);
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

impl Exchange<'_> {
    /// One attempt: a slot on the backend, a token, the request sent, the answer sorted.
    /// Returns when Azure's answer head came (or the attempt failed). Errs when the attempt
    /// could not start (backend busy, no token).
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    fn attempt<'r>(
        &self,
        mut sending: Sending<'r, '_>,
        inbound: &mut Inbound,
        span: &mut ChildSpan,
    ) -> impl Future<Output = Result<(AttemptOutcome<'r>, Instant), ProxyError>> {
        async move {
            let upstream_cfg = &self.state.config.upstream;
            let route = sending.route;
            let backend = self.backend(route);
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
                    failed_attempt(e, backend.name(), limit, replayable, sending.safe_to_repeat)
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
        // The token in the form the backend's service takes (Speech's aad#, Translator's
        // headers beside it).
        let presenter = &self.backend(sending.route).config.presenter;
        presenter.apply(sending.route.uri.path(), token.header(), &mut headers);
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
        let backend = self.backend(attempted.route);
        let (head, body) = attempted.response.into_parts();
        let body = http_body_util::Limited::new(body, UNAUTHORIZED_BODY_LIMIT)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let claims = match &attempted.token {
            UpstreamToken::Cached { token, .. } | UpstreamToken::Delegated { token, .. } => {
                token.claims.as_ref()
            }
            UpstreamToken::Passthrough(_) => None,
        };
        let challenge = head
            .headers
            .get(axum::http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        let facts = super::facts::upstream_facts(self.state, attempted.route, challenge);
        // A refusal the service's own rule explains (a wrong audience for Search, Speech
        // without a custom domain, Translator without its region) is the config's: a fresh
        // token would be refused the same way.
        let refresh_may_help =
            diagnose::refresh_may_help(status, &body, backend.config.scope.audience(), claims)
                && diagnose::classify_service(&facts, status, &body, claims).is_none();
        attempted.response = upstream::with_read_body(head, body);
        Outcome::Refused {
            answer: attempted,
            refresh_may_help,
        }
    }

    /// Azure refused a cached token (revoked, rotated keys): drops it, so the replay gets a
    /// fresh one.
    async fn refresh(&self, refused: Attempted<'_>) {
        let backend = self.backend(refused.route);
        tracing::warn!(backend = %backend.name(), "Azure refused the cached token with 401: refreshing it and replaying once");
        let (token, scope) = match &refused.token {
            UpstreamToken::Cached { token, scope } => (token, scope),
            UpstreamToken::Delegated { scope, .. } => {
                if let (Some(obo), Held::Entra { claims, .. }) =
                    (&self.state.obo, &self.caller.held)
                {
                    obo.invalidate(claims, scope).await;
                }
                return;
            }
            UpstreamToken::Passthrough(_) => return,
        };
        self.state.tokens.invalidate(scope, token).await;
        if let Some(apps) = &self.state.apps
            && let Held::App(app) = &self.caller.held
        {
            apps.invalidate(app, scope, token).await;
        }
    }
}

/// The answer when every route is cooling down: retry after the soonest cooldown ends.
pub(super) fn cooling_down(backends: &Backends, routes: &[Route]) -> ProxyError {
    let soonest = routes
        .iter()
        .filter_map(|r| backends[r.backend].health.cooling())
        .min();
    ProxyError::CoolingDown {
        retry_after_secs: attempts::cooling_retry_after_secs(soonest),
        backends: routes
            .iter()
            .map(|r| backends[r.backend].name().to_string())
            .collect(),
    }
}

/// The outcome of an attempt that got no answer from Azure: by what Azure may have done with
/// the request, with the error the client gets if nothing better comes.
pub(super) fn failed_attempt<'r>(
    e: upstream::Error,
    backend: &str,
    limit: usize,
    replayable: bool,
    safe_to_repeat: bool,
) -> AttemptOutcome<'r> {
    use upstream::Failure;
    let reset = |detail| ProxyError::UpstreamReset {
        backend: backend.to_string(),
        detail,
    };
    match e.failure() {
        Failure::Stale if replayable => Outcome::Stale(reset(STALE_AGAIN)),
        Failure::Stale => Outcome::Stale(reset(STALE_STREAMED)),
        Failure::Reset if !safe_to_repeat => Outcome::Reset(reset(RESET_CHANGES_STATE)),
        Failure::Reset if !replayable => Outcome::Reset(reset(RESET_STREAMED)),
        Failure::Reset => Outcome::Reset(reset(RESET_EVERY_TARGET)),
        Failure::Connect => Outcome::ConnectFailed(upstream_error(e, backend, limit)),
        Failure::Other => Outcome::Failed(upstream_error(e, backend, limit)),
    }
}

/// [`ProxyError::UpstreamReset`] details.
const STALE_AGAIN: &str = "Azure had closed the kept-alive connection, so it did not process the request, and closed the next ones too; retry shortly";
const STALE_STREAMED: &str = "Azure had closed the kept-alive connection, so it did not process the request, but its body was streamed through and cannot be sent again; retry the request";
const RESET_CHANGES_STATE: &str = "Azure may have processed the request. It was not sent again, because it creates or changes state (files, uploads, batches, fine-tuning, assistants, threads, vector stores, stored responses) and sending it twice could do that twice: check whether it took effect before retrying";
const RESET_STREAMED: &str =
    "Azure may have processed the request. Its body was streamed through and cannot be sent again";
const RESET_EVERY_TARGET: &str = "Azure may have processed the request. It was sent to every target allowed (upstream.max_attempts, upstream.request_timeout_secs); retry later";

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

pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
