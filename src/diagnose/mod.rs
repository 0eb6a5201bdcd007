//! Explaining auth failures: Azure error classification, token explanation, and `doctor`.

mod annotate;
mod azure_error;
pub mod dns;
pub mod doctor;
mod explain;
mod probe;
pub mod reach;
mod services;
mod when;
mod words;

pub use annotate::{DIAGNOSIS_HEADER, annotate, wants};
pub use azure_error::{Context, Diagnosis, DiagnosisCode, TokenFacts, classify, refresh_may_help};
pub use explain::{
    Credential, ExplainError, Explanation, Problem, Target, TargetKind, explain, extract_token,
    render_text,
};
pub use services::ServiceFacts;

use crate::claims::Claims;
use crate::cloud::{Cloud, HostKind};

/// What diagnosis needs to know about where a failed request went: plain data the request path
/// hands over, so diagnosing never reaches into the proxy's state.
#[derive(Debug, Clone, Copy)]
pub struct Upstream<'a> {
    /// Backend name from the config.
    pub backend: &'a str,
    /// Upstream host.
    pub host: &'a str,
    /// `None` for custom or loopback hosts.
    pub host_kind: Option<HostKind>,
    /// The audience the backend's token scope names.
    pub audience: &'a str,
    /// Deployments configured for the backend (may be empty).
    pub known_deployments: &'a [String],
    pub cloud: Cloud,
    /// The upstream URL the request was sent to.
    pub uri: &'a http::Uri,
    /// The path of the backend's configured endpoint (`/` for a resource base).
    pub endpoint_path: &'a str,
    /// The deployment the request targeted.
    pub deployment: Option<&'a str>,
    /// The backend's service, and how the token went to it.
    pub service: ServiceFacts<'a>,
}

/// The service's own reading of a refusal (Search's audience, Speech's custom domain,
/// Translator's region), when its rule explains it: such a refusal is the config's, and a fresh
/// token would be refused the same way.
pub(crate) fn classify_service(
    upstream: &Upstream<'_>,
    status: u16,
    body: &[u8],
    claims: Option<&Claims>,
) -> Option<Diagnosis> {
    let ctx = context(upstream, claims, None);
    services::classify(status, body, &upstream.service, &ctx)
}

/// What classification knows of a request to `upstream`.
fn context<'a>(
    upstream: &Upstream<'a>,
    claims: Option<&'a Claims>,
    api_version: Option<&'a str>,
) -> Context<'a> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Context {
        backend: upstream.backend,
        host: upstream.host,
        cloud: upstream.cloud,
        host_kind: upstream.host_kind,
        expected_audience: upstream.audience,
        token: claims,
        expected_tenant: None,
        deployment: upstream.deployment,
        known_deployments: upstream.known_deployments,
        request_path: Some(upstream.uri.path()),
        endpoint_path: upstream.endpoint_path,
        api_version,
        now,
    }
}

/// Classifies an upstream error for one request; `None` when there is nothing to add. The
/// diagnosis is logged as one structured line (claims, never the token).
pub(crate) fn classify_for_route(
    upstream: &Upstream<'_>,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    claims: Option<&Claims>,
) -> Option<String> {
    let api_version = upstream.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "api-version")
            .map(|(_, v)| v.into_owned())
    });
    let is_v1 = upstream.uri.path().contains("/openai/v1/");
    // The v1 API needs no api-version; don't blame a missing one.
    let api_version = if is_v1 {
        Some("v1")
    } else {
        api_version.as_deref()
    };
    let ctx = context(upstream, claims, api_version);
    let d = services::classify(status, body, &upstream.service, &ctx)
        .or_else(|| classify(status, retry_after, body, &ctx))?;
    tracing::warn!(
        diagnosis = d.code.as_str(),
        backend = %upstream.backend,
        status,
        token_aud = d.token.as_ref().and_then(|t| t.aud.as_deref()).unwrap_or("-"),
        token_tid = d.token.as_ref().and_then(|t| t.tid.as_deref()).unwrap_or("-"),
        token_oid = d.token.as_ref().and_then(|t| t.oid.as_deref()).unwrap_or("-"),
        token_appid = d.token.as_ref().and_then(|t| t.appid.as_deref()).unwrap_or("-"),
        token_exp = d.token.as_ref().and_then(|t| t.exp).unwrap_or(0),
        summary = %d.summary,
        fix = %d.fix,
        "Azure refused the request"
    );
    Some(d.header_value())
}
