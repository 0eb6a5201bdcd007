//! What the client gets: Azure's answer with its headers cleaned (and a diagnosis on the errors
//! the proxy explains), the proxy's own error when it could not proxy, and `GET /v1/models`.

use super::body::Watched;
use super::headers::downstream_headers;
use super::usage::{Meter, Metered, Settle, TokenLabels};
use super::{Attempted, CALLER_HEADER, Exchange};
use crate::backends::Backends;
use crate::diagnose;
use crate::error::ProxyError;
use crate::inbound::query::Masked;
use crate::limits::Admitted;
use crate::logging::access;
use crate::routing::Route;
use crate::state::Snapshot;
use crate::upstream;
use axum::body::Body;
use axum::http::Method;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

impl Exchange<'_> {
    /// Logs and counts the answer, then hands it to the client.
    pub(super) async fn finish(&mut self, a: Attempted<'_>) -> Response {
        let backend = &self.state.routes.backends()[a.route.backend];
        let status = a.response.status().as_u16();
        self.state.request_metrics.request(
            a.route.backend.index(),
            backend.name(),
            a.route.model.as_deref(),
            status,
        );
        self.state.recent.request(self.caller, status);
        let meter = self.meter_for(&a);
        let mut response = match meter {
            // Logged when the answer ends, with its usage.
            Some(meter) => self.metered(a, meter),
            None => {
                self.log_proxied(&a);
                self.response_filter_downstream(a).await
            }
        };
        if let Some(admitted) = &self.metering.admitted {
            ratelimit_headers(response.headers_mut(), admitted);
        }
        response
    }

    /// The meter for a successful answer to a POST that is JSON or SSE.
    fn meter_for(&self, a: &Attempted<'_>) -> Option<Meter> {
        if !a.response.status().is_success() {
            return None;
        }
        let content_type = a
            .response
            .headers()
            .get(header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        Meter::for_content_type(content_type, self.metering.hide_usage_chunk)
    }

    /// A successful answer whose usage is read as it passes, counted and charged at its end.
    fn metered(&mut self, a: Attempted<'_>, meter: Meter) -> Response {
        let status = a.response.status();
        let rewrites = meter.rewrites();
        let settle = Settle {
            admission: self.metering.admission.take(),
            estimate: self.metering.estimate.kept(),
            labels: TokenLabels::for_route(self.state, self.caller, a.route),
            log: self.access_fields(&a),
            started: self.started,
            trace: self.trace.clone(),
        };
        let (head, body) = a.response.into_parts();
        let body = Watched::new(
            body,
            self.state.config.upstream.idle_timeout,
            a.permit,
            self.state.request_metrics.inflight_streams(),
        );
        let mut response = Response::new(Body::new(Metered::new(body, meter, settle)));
        *response.status_mut() = status;
        *response.headers_mut() = downstream_headers(head.headers);
        if rewrites {
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        response
    }

    /// The access-log line of an answer that is not metered.
    fn log_proxied(&self, a: &Attempted<'_>) {
        if let Some(mut line) = self.access_fields(a) {
            line.number("took_ms", self.started.elapsed().as_millis() as u64)
                .write("proxied");
        }
    }

    /// The access line's fields known from the answer's head (a metered answer's line is
    /// written at its end, with the usage), or `None` when access lines are not logged.
    fn access_fields(&self, a: &Attempted<'_>) -> Option<access::Fields> {
        let mut line = access::Fields::start()?;
        let backend = &self.state.routes.backends()[a.route.backend];
        line.text("request_id", self.request_id)
            .text("path", self.path);
        if let Some(query) = self.query {
            line.display("query", Masked(query));
        }
        line.display("caller", self.caller.label())
            .text("backend", backend.name())
            .quoted("model", a.route.model.as_deref().unwrap_or("-"))
            .quoted("deployment", a.route.deployment.as_deref().unwrap_or("-"))
            .number("status", a.response.status().as_u16().into());
        Some(line)
    }

    /// Azure's answer for the client: errors the proxy explains are read (bounded) and get a
    /// diagnosis header; everything else streams through, watched for silence.
    async fn response_filter_downstream(&self, a: Attempted<'_>) -> Response {
        let status = a.response.status();
        if diagnose::wants(status) {
            // Claims are read only on this (error) path.
            let claims = a.token.claims();
            let mut headers = downstream_headers(a.response.headers().clone());
            let facts = upstream_facts(self.state, a.route);
            // Boxed: errors are rare, and their reading state would size every request's future.
            let (body, diagnosis) =
                Box::pin(diagnose::annotate(a.response, &facts, claims.as_ref())).await;
            self.state.recent.diagnosis(
                self.request_id,
                &self.caller.label().to_string(),
                self.path,
                facts.backend,
                status.as_u16(),
                diagnosis.as_deref(),
            );
            if let Some(d) = &diagnosis {
                self.trace
                    .diagnosis(d.split_once(": ").map_or(d.as_str(), |(code, _)| code));
            }
            if let Some(d) = diagnosis
                && let Ok(v) = HeaderValue::from_str(&d)
            {
                headers.insert(diagnose::DIAGNOSIS_HEADER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&self.caller.label().to_string()) {
                headers.insert(CALLER_HEADER, v);
            }
            headers.remove(header::CONTENT_LENGTH);
            let mut response = Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            return response;
        }
        let (head, body) = a.response.into_parts();
        let body = Watched::new(
            body,
            self.state.config.upstream.idle_timeout,
            a.permit,
            self.state.request_metrics.inflight_streams(),
        );
        let mut response = Response::new(Body::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = downstream_headers(head.headers);
        response
    }
}

/// `x-ratelimit-*` headers of the key's budget, over any Azure sent.
fn ratelimit_headers(headers: &mut HeaderMap, admitted: &Admitted) {
    const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
    const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
    const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    const REMAINING_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-requests");
    if let Some((limit, remaining)) = admitted.tokens() {
        headers.insert(LIMIT_TOKENS, HeaderValue::from(limit));
        headers.insert(REMAINING_TOKENS, HeaderValue::from(remaining));
    }
    if let Some((limit, remaining)) = admitted.requests() {
        headers.insert(LIMIT_REQUESTS, HeaderValue::from(limit));
        headers.insert(REMAINING_REQUESTS, HeaderValue::from(remaining));
    }
}

/// What diagnosis needs to know about where the request went.
fn upstream_facts<'a>(state: &'a Snapshot, route: &'a Route) -> diagnose::Upstream<'a> {
    let backend = &state.routes.backends()[route.backend].config;
    diagnose::Upstream {
        backend: &backend.name,
        host: backend.host(),
        host_kind: backend.host_kind,
        audience: backend.scope.audience(),
        known_deployments: &backend.deployments,
        cloud: state.config.cloud,
        uri: &route.uri,
        deployment: route.deployment.as_deref(),
    }
}

/// The proxy's own error as the client's answer, logged, naming the caller when known.
pub(super) fn fail_to_proxy(
    e: ProxyError,
    request_id: &str,
    method: &Method,
    uri: &axum::http::Uri,
    caller_label: Option<&str>,
) -> Response {
    if let Some(mut line) = access::Fields::start() {
        line.text("request_id", request_id)
            .text("method", method.as_str())
            .text("path", uri.path());
        if let Some(query) = uri.query() {
            line.display("query", Masked(query));
        }
        line.quoted("caller", caller_label.unwrap_or("-"))
            .number("status", e.status().as_u16().into())
            .display("error", &e)
            .write("rejected");
    }
    let mut r = e.into_response();
    if let Some(label) = caller_label.and_then(|l| HeaderValue::from_str(l).ok()) {
        r.headers_mut().insert(CALLER_HEADER, label);
    }
    r
}

/// The answer when every route is cooling down: retry after the soonest cooldown ends.
pub(super) fn cooling_down(backends: &Backends, routes: &[Route]) -> ProxyError {
    let soonest = routes
        .iter()
        .filter_map(|r| backends[r.backend].health.cooling())
        .min();
    ProxyError::CoolingDown {
        retry_after_secs: super::attempts::cooling_retry_after_secs(soonest),
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
) -> super::AttemptOutcome<'r> {
    use super::attempts::Outcome;
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

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// `GET /v1/models`: the configured model names.
pub(super) fn list_models(state: &Snapshot) -> Response {
    let data: Vec<serde_json::Value> = state
        .routes
        .model_names()
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "entra-proxy"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}
