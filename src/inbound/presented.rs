//! Which credential a request carries, and where: the headers Azure and OpenAI clients use, a
//! key in the query string, a key in a WebSocket subprotocol. Nothing is checked here.

use super::{API_KEY, AuthError, CredentialSource, SUBSCRIPTION_KEY, issued, query, subprotocol};
use crate::claims;
use crate::config::InboundMode;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use std::borrow::Cow;

/// The credential a request carries, before it is checked.
pub(super) enum Presented<'a> {
    Key(Cow<'a, str>, CredentialSource),
    Jwt(Cow<'a, str>),
    Basic(&'a str),
    /// A token this proxy issued (`issueToken`).
    Issued(Cow<'a, str>),
}

/// The credential a request carries: `api-key` first (Azure SDKs), then
/// `Ocp-Apim-Subscription-Key` (Cognitive Services clients), then `Authorization`:
/// `Bearer <JWT>` (Entra), `Bearer <key>` (OpenAI SDKs), or `Basic` (client credentials); then
/// a key in the query string, then one in a WebSocket subprotocol (browsers).
pub(super) fn presented_credential<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    entra_enabled: bool,
) -> Result<Option<Presented<'a>>, AuthError> {
    for (name, source, not_ascii) in [
        (
            API_KEY,
            CredentialSource::ApiKeyHeader,
            "the api-key header is not ASCII",
        ),
        (
            SUBSCRIPTION_KEY,
            CredentialSource::SubscriptionKeyHeader,
            "the Ocp-Apim-Subscription-Key header is not ASCII",
        ),
    ] {
        if let Some(v) = headers.get(name) {
            let v = v
                .to_str()
                .map_err(|_| AuthError::MalformedAuthorization(not_ascii))?
                .trim();
            if !v.is_empty() {
                return Ok(Some(Presented::Key(Cow::Borrowed(v), source)));
            }
        }
    }
    let Some(auth) = headers.get(AUTHORIZATION) else {
        if let Some(found) = query::credential_param(query) {
            return match found.authorization {
                true => query_authorization(found.value, entra_enabled).map(Some),
                false => Ok(Some(Presented::Key(
                    found.value,
                    CredentialSource::QueryParameter,
                ))),
            };
        }
        if let Some(key) = subprotocol::key(headers) {
            return Ok(Some(Presented::Key(
                Cow::Borrowed(key),
                CredentialSource::Subprotocol,
            )));
        }
        return Ok(None);
    };
    let auth = auth
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization("the Authorization header is not ASCII"))?
        .trim();
    let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    let value = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Some(Presented::Basic(value)));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedAuthorization(
            "expected `Authorization: Bearer <key or token>` or `Authorization: Basic <client credentials>`",
        ));
    }
    if value.is_empty() {
        return Err(AuthError::MalformedAuthorization(
            "`Authorization: Bearer` has no value",
        ));
    }
    bearer(
        Cow::Borrowed(value),
        entra_enabled,
        CredentialSource::BearerHeader,
    )
    .map(Some)
}

/// What a bearer value is: a token this proxy issued, an Entra token, or a key.
fn bearer(
    value: Cow<'_, str>,
    entra_enabled: bool,
    source: CredentialSource,
) -> Result<Presented<'_>, AuthError> {
    if issued::is_issued(&value) {
        return Ok(Presented::Issued(value));
    }
    if claims::looks_like_jwt(&value) && entra_enabled {
        return Ok(Presented::Jwt(value));
    }
    if claims::looks_like_jwt(&value) {
        return Err(AuthError::ModeDisabled {
            mode: InboundMode::Entra.name(),
            enabled: vec![],
        });
    }
    Ok(Presented::Key(value, source))
}

/// `Authorization=Bearer%20…` in the query: the Speech SDK's headers, as a browser WebSocket
/// has to send them.
fn query_authorization(
    value: Cow<'_, str>,
    entra_enabled: bool,
) -> Result<Presented<'_>, AuthError> {
    fn split(v: &str) -> (&str, &str) {
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        (scheme, rest.trim())
    }
    let (scheme, rest) = split(&value);
    if !scheme.eq_ignore_ascii_case("bearer") || rest.is_empty() {
        return Err(AuthError::MalformedAuthorization(
            "an Authorization query parameter must be `Bearer <key or token>`",
        ));
    }
    let token = match value {
        Cow::Borrowed(v) => Cow::Borrowed(split(v).1),
        Cow::Owned(v) => Cow::Owned(split(&v).1.to_string()),
    };
    bearer(token, entra_enabled, CredentialSource::QueryParameter)
}
