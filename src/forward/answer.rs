//! What the client gets: Azure's answer with its headers cleaned (and a diagnosis on the errors
//! the proxy explains), the proxy's own error when it could not proxy, and `GET /v1/models`.

use super::CALLER_HEADER;
use super::body::Watched;
use super::exchange::Exchange;
use super::headers::downstream_headers;
use super::http::Attempted;
use crate::diagnose;
use crate::error::ProxyError;
use crate::inbound::Caller;
use crate::inbound::query::Masked;
use crate::limits::Admitted;
use crate::logging::access;
use crate::metering::Meter;
use crate::metering::settle::{Metered, Pricing, Settle};
use crate::metering::tokens::{TokenCounters, TokenLabels, spend_counter};
use crate::routing::Route;
use crate::state::Snapshot;
use crate::telemetry::NO_MODEL;
use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

impl Exchange<'_> {
    /// Logs and counts the answer, then hands it to the client (its links to the backend
    /// pointing at the proxy).
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` holds its by-value arguments twice"
    )]
    pub(super) fn finish(&mut self, mut a: Attempted<'_>) -> impl Future<Output = Response> {
        async move {
            if self.rewrite_links(&mut a.response, a.route) {
                // Boxed: only the services' small JSON answers take this path.
                a = Box::pin(self.rewrite_body(a)).await;
            }
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
                    if diagnose::wants(a.response.status()) {
                        // Boxed: errors are rare, and their reading state would size every
                        // request's future.
                        Box::pin(self.diagnosed(a)).await
                    } else {
                        self.passed_through(a)
                    }
                }
            };
            if let Some(admitted) = &self.metering.admitted {
                ratelimit_headers(response.headers_mut(), admitted);
            }
            response
        }
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
            admissions: std::mem::take(&mut self.metering.admissions),
            estimate: self.metering.estimate.kept(),
            labels: token_counters(self.state, self.caller, a.route),
            pricing: pricing(self.state, self.caller, a.route),
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
        line.display("caller", self.caller.label());
        principal_fields(&mut line, self.caller);
        line.text("backend", backend.name())
            .quoted("model", a.route.model.as_deref().unwrap_or(NO_MODEL))
            .quoted(
                "deployment",
                a.route.deployment.as_deref().unwrap_or(NO_MODEL),
            )
            .number("status", a.response.status().as_u16().into());
        Some(line)
    }

    /// An error Azure answered that the proxy explains: read (bounded), with a diagnosis
    /// header.
    async fn diagnosed(&self, a: Attempted<'_>) -> Response {
        let status = a.response.status();
        // Claims are read only on this (error) path.
        let claims = a.token.claims();
        let mut headers = downstream_headers(a.response.headers().clone());
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let facts = super::facts::upstream_facts(self.state, a.route, challenge.as_deref());
        let (body, diagnosis) = diagnose::annotate(a.response, &facts, claims.as_ref()).await;
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
        response
    }

    /// Any other answer Azure sent, streamed through and watched for silence.
    fn passed_through(&self, a: Attempted<'_>) -> Response {
        let status = a.response.status();
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

/// An Entra caller's `oid` and `azp` on its access line (ids, not secrets).
pub(super) fn principal_fields(line: &mut access::Fields, caller: &Caller) {
    let (oid, azp) = caller.ids();
    if let Some(oid) = oid {
        line.text("oid", oid);
    }
    if let Some(azp) = azp {
        line.text("azp", azp);
    }
}

/// The `entra_proxy_tokens_total` counters of an answer on `route`: labelled with the caller's
/// label, and the model and deployment when the config names them (else `unconfigured`), so
/// the label sets stay bounded by the config.
pub(super) fn token_counters(state: &Snapshot, caller: &Caller, route: &Route) -> TokenCounters {
    let backend = &state.routes.backends()[route.backend];
    let model = match route.model.as_deref() {
        Some(m) if state.routes.model_names().iter().any(|n| n == m) => m,
        Some(_) => "unconfigured",
        None => NO_MODEL,
    };
    let deployment = match route.deployment.as_deref() {
        Some(d) if backend.config.deployments.iter().any(|k| k == d) => d,
        Some(_) => "unconfigured",
        None => NO_MODEL,
    };
    TokenCounters::of(TokenLabels {
        caller: &caller.label,
        model,
        deployment,
        backend: backend.name(),
    })
}

/// The price of the deployment `route` went to, with the spend counter of the caller and its
/// model; `None` when the deployment's model has no price (spend-free).
pub(super) fn pricing(state: &Snapshot, caller: &Caller, route: &Route) -> Option<Pricing> {
    let tariff = state
        .tariffs
        .of(route.backend.index(), route.deployment.as_deref())?;
    tariff.price?;
    Some(Pricing {
        spent: spend_counter(&caller.label, &tariff.model),
        tariff: tariff.clone(),
        currency: state.tariffs.currency().clone(),
    })
}

/// The proxy's own error as the client's answer (logged, counted and recorded by
/// [`crate::refusal`]), naming the caller when known.
pub(super) fn fail_to_proxy(
    recent: &crate::telemetry::recent::Recent,
    e: ProxyError,
    refused: crate::refusal::Refused<'_>,
) -> Response {
    let label = refused.caller.map(|c| c.label().to_string());
    let mut r = crate::refusal::answer(recent, e, refused);
    if let Some(label) = label.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(CALLER_HEADER, label);
    }
    r
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
