//! Errors on the request path, and the one place they become HTTP answers.
//!
//! Policy: the request path uses the typed [`ProxyError`]; `anyhow` is used only at start-up
//! and in the CLI. Every variant maps to a status in one exhaustive match (no `_` arm), and the
//! body is OpenAI/Azure-shaped `{"error":{"code":…,"message":…,"type":…}}`. Messages name the
//! problem and the fix; they never contain a key, secret or token. Upstream non-2xx answers are
//! not errors here: they pass through unchanged.

use crate::inbound::AuthError;
use crate::limits::LimitError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(
        "{endpoint} is served to loopback clients, or with the admin key in x-admin-key (server.admin_key_sha256)"
    )]
    AdminOnly { endpoint: &'static str },
    #[error("{caller} may not use {wanted}; allowed: {}", .allowed.join(", "))]
    ModelNotAllowed {
        caller: String,
        wanted: String,
        allowed: Vec<String>,
    },
    #[error("Entra refused the caller's client credentials: AADSTS{code}: {fix}")]
    ClientCredentialsRejected { code: u32, fix: String },
    #[error(
        "the caller's token is for {has}, but backend {backend} needs {needs}; request scope {scope}"
    )]
    PassthroughAudience {
        has: String,
        needs: String,
        backend: String,
        scope: String,
    },

    #[error("unknown model {model:?}; this proxy serves: {}", list(.known))]
    UnknownModel { model: String, known: Vec<String> },
    #[error("the request body has no \"model\" field; OpenAI-style /v1 requests name the model, one of: {}", list(.known))]
    MissingModel { known: Vec<String> },
    #[error("the request body is not JSON ({reason}); {path} expects a JSON object")]
    BodyNotJson { path: String, reason: String },
    #[error("no route for {path}: {hint}")]
    NoRoute { path: String, hint: String },
    #[error("deployment {deployment:?} is not configured on any backend; configured deployments: {}", list(.known))]
    AmbiguousDeployment {
        deployment: String,
        known: Vec<String>,
    },
    #[error("the request body is larger than the limit of {limit} bytes (server.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    #[error(
        "the request line and headers are {size} bytes, over the limit of {limit} bytes (server.max_header_bytes)"
    )]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),

    #[error("the proxy's identity ({credential}) cannot get a token for {scope}: {reason}{}", since_text(.since))]
    IdentityUnavailable {
        credential: String,
        scope: String,
        reason: String,
        since: Option<SystemTime>,
    },
    #[error("every backend for this request is cooling down after Azure asked to wait ({}); retry in {retry_after_secs}s", .backends.join(", "))]
    CoolingDown {
        retry_after_secs: u64,
        backends: Vec<String>,
    },
    #[error(
        "backend {backend} is at its limit of {max_concurrent} concurrent requests (waited {waited_ms} ms); retry shortly"
    )]
    BackendBusy {
        backend: String,
        max_concurrent: usize,
        waited_ms: u64,
    },
    #[error(
        "the proxy has {max} WebSockets open, its limit (server.max_websockets); retry later or raise the limit"
    )]
    TooManyWebSockets { max: usize },
    #[error("not a valid WebSocket handshake: {reason}")]
    WebSocketHandshake { reason: &'static str },
    #[error("the query has no {param:?} parameter; name the model with ?{param}=…, one of: {}", list(.known))]
    MissingQueryModel {
        param: &'static str,
        known: Vec<String>,
    },
    #[error(
        "the request names {name:?} more than once in its {place} (letter case aside); Azure reads names without regard to case, so name it once"
    )]
    DuplicateParameter {
        name: &'static str,
        place: &'static str,
    },
    #[error("backend {backend} is unreachable: {reason}")]
    UpstreamUnreachable { backend: String, reason: String },
    #[error("backend {backend} did not answer within {limit_secs}s ({limit})")]
    UpstreamTimeout {
        backend: String,
        limit: &'static str,
        limit_secs: f64,
    },
    #[error(
        "backend {backend} closed the connection after the request was sent, before any answer: {detail}"
    )]
    UpstreamReset {
        backend: String,
        detail: &'static str,
    },
    /// The on-behalf-of exchange for the signed-in user did not give a token.
    #[error(transparent)]
    OnBehalfOf(#[from] crate::identity::OboError),
}

/// Every value [`ProxyError::code`] can return, in the order the troubleshooting chapter of the
/// user guide lists them. The unit test `every_code_is_listed` builds one error of each kind
/// (its exhaustive match stops the build when a variant is added) and checks both ways.
pub const CODES: &[&str] = &[
    // The caller's credential (401, or 503 when it cannot be checked right now).
    "missing_credential",
    "invalid_api_key",
    "malformed_authorization",
    "credential_mode_disabled",
    "key_expired",
    "no_matching_identity",
    "token_malformed",
    "token_bad_algorithm",
    "token_no_tenant",
    "token_wrong_tenant",
    "token_bad_issuer",
    "token_unknown_kid",
    "token_bad_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_wrong_audience",
    "signing_keys_unavailable",
    "missing_tenant",
    "invalid_client_credentials",
    // On behalf of the signed-in user.
    "obo_no_user",
    "obo_consent_required",
    "obo_interaction_required",
    "obo_token_rejected",
    "obo_app_rejected",
    "obo_unavailable",
    "issued_token_expired",
    "issued_token_invalid",
    "issued_token_revoked",
    "issue_token_not_for_caller",
    // What the caller may do.
    "model_not_allowed",
    "forbidden",
    "rate_limited",
    "tokens_rate_limited",
    "insufficient_quota",
    "request_exceeds_budget",
    "limits_unavailable",
    // The request itself.
    "model_not_found",
    "missing_model",
    "duplicate_parameter",
    "invalid_json",
    "no_route",
    "deployment_not_configured",
    "body_too_large",
    "headers_too_large",
    "body_read_error",
    "invalid_websocket_handshake",
    // The proxy's identity and the backends.
    "identity_unavailable",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_reset",
    "backends_cooling_down",
    "backend_busy",
    "too_many_websockets",
];

/// The fix for a refusal with error code `code`, in one sentence: what the status page shows
/// beside each of the proxy's own refusals. Empty for a code not in [`CODES`] (a unit test
/// holds every listed code to a fix).
pub fn fix_for(code: &str) -> &'static str {
    match code {
        "missing_credential" => {
            "Send the key as `api-key: KEY` or `Authorization: Bearer KEY` (or an Entra token as a bearer)."
        }
        "invalid_api_key" => {
            "Send a key this proxy issued (`entra-proxy keys new`); a revoked or mistyped key gets this too."
        }
        "malformed_authorization" => {
            "Send `Authorization: Bearer <key or token>` (or Basic credentials the proxy can read)."
        }
        "credential_mode_disabled" => {
            "Use a credential kind that [inbound] modes enables, or enable this one."
        }
        "key_expired" => "Issue a new key with `entra-proxy keys new` and give it to the client.",
        "no_matching_identity" => {
            "Add an [[identities]] block that matches the caller (the message names the block), or set [inbound.entra] unmatched = \"allow\"."
        }
        "token_malformed" => "Send an Entra ID access token (a JWT starting with eyJ).",
        "token_bad_algorithm" => "Send an Entra ID access token; they are signed with RS256.",
        "token_no_tenant" => "Send an Entra ID access token; this one has no tid claim.",
        "token_wrong_tenant" => {
            "Get the token from a tenant in [inbound.entra] tenants, or add its tenant there."
        }
        "token_bad_issuer" => {
            "Get the token from Entra ID of the configured cloud for the token's own tenant."
        }
        "token_unknown_kid" => {
            "Get a token issued by Entra for this tenant; if keys just rotated, retry in a minute."
        }
        "token_bad_signature" => "Send the token exactly as Entra issued it.",
        "token_expired" => "Get a fresh token; SDK credentials refresh it when kept, not copied.",
        "token_not_yet_valid" => "Synchronise the caller's clock (NTP).",
        "token_wrong_audience" => {
            "Request a token for the scope the message names, such as https://cognitiveservices.azure.com/.default."
        }
        "signing_keys_unavailable" => {
            "Let the proxy reach login.microsoftonline.com for the tenant's signing keys, then retry."
        }
        "missing_tenant" => {
            "Set [inbound.client_credentials] tenant_id, or allow and send x-ms-tenant-id."
        }
        "invalid_client_credentials" => {
            "Fix the app's client id or secret as the AADSTS code in the message says."
        }
        "obo_no_user" => {
            "Send a token a user signed in for (delegated), or serve this app with upstream = \"proxy\"."
        }
        "obo_consent_required" => {
            "Grant the proxy's app the delegated permission user_impersonation on Microsoft Cognitive Services (admin consent at the URL the message names)."
        }
        "obo_interaction_required" => {
            "Have the client sign the user in again with the claims challenge from WWW-Authenticate."
        }
        "obo_token_rejected" => {
            "Request the caller's token for the proxy's own app (its Application ID URI), not for Azure."
        }
        "obo_app_rejected" => {
            "Fix the proxy's app registration or [on_behalf_of] credential as the message says."
        }
        "obo_unavailable" => {
            "Retry; if it persists, run `entra-proxy doctor` to see whether Entra is reachable."
        }
        "issued_token_expired" => {
            "Fetch a new token from POST /sts/v1.0/issueToken with the key; they last 10 minutes."
        }
        "issued_token_invalid" => {
            "Fetch a new token from this proxy; to share them across replicas set [server] issued_token_secret on every replica."
        }
        "issued_token_revoked" => {
            "Fetch a new token with the key the proxy has now (the old key was removed or rotated)."
        }
        "issue_token_not_for_caller" => {
            "Call the service with your own Entra token or client credentials; issueToken is for key callers."
        }
        "model_not_allowed" => "Ask for a model the key's `models` lists, or add this one there.",
        "forbidden" => "Call from loopback, or send the admin key in x-admin-key.",
        "rate_limited" => "Wait for Retry-After, or raise the key's requests_per_minute.",
        "tokens_rate_limited" => "Wait for Retry-After, or raise the key's tokens_per_minute.",
        "insufficient_quota" => {
            "Wait until the quota or budget period resets, or raise the key's token_quota or budget."
        }
        "request_exceeds_budget" => {
            "Lower the request's max_tokens (or shorten its prompt) as the message says, or raise the limit it names."
        }
        "limits_unavailable" => {
            "Bring Redis back, or set [limits] on_redis_error = \"allow\" to serve without it."
        }
        "model_not_found" => "Ask for a model in [[models]] (GET /v1/models lists them).",
        "missing_model" => {
            "Name the model: \"model\" in a /v1 body, ?model= or ?deployment= for realtime."
        }
        "duplicate_parameter" => {
            "Name the model (or deployment) once, in one letter case, in the body or the query."
        }
        "invalid_json" => "Send the body as a JSON object.",
        "no_route" => {
            "Choose the backend with x-entra-proxy-backend, or use a path the backend's API serves."
        }
        "deployment_not_configured" => {
            "Add the deployment to a backend's `deployments`, or choose the backend with x-entra-proxy-backend."
        }
        "body_too_large" => "Send a smaller body, or raise [server] max_body_bytes.",
        "headers_too_large" => {
            "Send fewer or smaller headers (a large cookie?), or raise [server] max_header_bytes."
        }
        "body_read_error" => "Send the whole body; the client broke off while sending it.",
        "invalid_websocket_handshake" => {
            "Send a WebSocket handshake: GET, Upgrade: websocket, Sec-WebSocket-Version: 13 and a key."
        }
        "identity_unavailable" => {
            "Run `entra-proxy doctor`: the proxy's identity cannot get a token for the backend."
        }
        "upstream_unreachable" => {
            "Check the backend's endpoint, DNS and network path (`entra-proxy doctor` shows each)."
        }
        "upstream_timeout" => {
            "Retry; if Azure is slow on purpose, raise the timeout the message names."
        }
        "upstream_reset" => {
            "Check whether the call took effect before sending it again; Azure may have run it."
        }
        "backends_cooling_down" => {
            "Wait for Retry-After, or give the model more targets (another deployment or region)."
        }
        "backend_busy" => "Retry shortly, or raise the backend's max_concurrent.",
        "too_many_websockets" => "Retry later, or raise [server] max_websockets.",
        _ => "",
    }
}

/// The status of a request refused by its key's budget: 429, or 503 when the store is away
/// under `on_redis_error = "deny"`.
fn limit_status(e: &LimitError) -> StatusCode {
    match e {
        LimitError::Requests { .. }
        | LimitError::Tokens { .. }
        | LimitError::Quota { .. }
        | LimitError::Spend { .. }
        | LimitError::TooLarge { .. } => StatusCode::TOO_MANY_REQUESTS,
        LimitError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn limit_code(e: &LimitError) -> &'static str {
    match e {
        LimitError::Requests { .. } => "rate_limited",
        LimitError::Tokens { .. } => "tokens_rate_limited",
        LimitError::Quota { .. } | LimitError::Spend { .. } => "insufficient_quota",
        LimitError::TooLarge { .. } => "request_exceeds_budget",
        LimitError::StoreUnavailable => "limits_unavailable",
    }
}

/// The status of a refused credential: 401, except keys that cannot be
/// checked right now (503).
fn auth_status(e: &AuthError) -> StatusCode {
    match e {
        AuthError::MissingCredential
        | AuthError::UnknownKey(_)
        | AuthError::MalformedAuthorization(_)
        | AuthError::ModeDisabled { .. }
        | AuthError::TokenRejected(_)
        | AuthError::KeyExpired { .. }
        | AuthError::MissingTenant
        | AuthError::IssuedToken(_) => StatusCode::UNAUTHORIZED,
        AuthError::NoIdentity(_) | AuthError::IssueNotForCaller { .. } => StatusCode::FORBIDDEN,
        AuthError::SigningKeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn auth_code(e: &AuthError) -> &'static str {
    match e {
        AuthError::MissingCredential => "missing_credential",
        AuthError::UnknownKey(_) => "invalid_api_key",
        AuthError::MalformedAuthorization(_) => "malformed_authorization",
        AuthError::ModeDisabled { .. } => "credential_mode_disabled",
        AuthError::TokenRejected(r) => r.code(),
        AuthError::SigningKeysUnavailable(_) => "signing_keys_unavailable",
        AuthError::KeyExpired { .. } => "key_expired",
        AuthError::MissingTenant => "missing_tenant",
        AuthError::NoIdentity(_) => "no_matching_identity",
        AuthError::IssuedToken(r) => r.code(),
        AuthError::IssueNotForCaller { .. } => "issue_token_not_for_caller",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none configured)".to_string()
    } else {
        items.join(", ")
    }
}

fn since_text(since: &Option<SystemTime>) -> String {
    match since {
        Some(t) => {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            match time::OffsetDateTime::from_unix_timestamp(secs)
                .ok()
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }) {
                Some(s) => format!(" (failing since {s})"),
                None => String::new(),
            }
        }
        None => String::new(),
    }
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Auth(a) => auth_status(a),
            ProxyError::Limit(l) => limit_status(l),
            ProxyError::ClientCredentialsRejected { .. }
            | ProxyError::PassthroughAudience { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::ModelNotAllowed { .. } | ProxyError::AdminOnly { .. } => {
                StatusCode::FORBIDDEN
            }
            ProxyError::CoolingDown { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::BackendBusy { .. } | ProxyError::TooManyWebSockets { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UnknownModel { .. }
            | ProxyError::NoRoute { .. }
            | ProxyError::AmbiguousDeployment { .. } => StatusCode::NOT_FOUND,
            ProxyError::MissingModel { .. }
            | ProxyError::BodyNotJson { .. }
            | ProxyError::BodyRead(_)
            | ProxyError::WebSocketHandshake { .. }
            | ProxyError::MissingQueryModel { .. }
            | ProxyError::DuplicateParameter { .. } => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::IdentityUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnreachable { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamReset { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::OnBehalfOf(e) => e.status(),
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Auth(a) => auth_code(a),
            ProxyError::Limit(l) => limit_code(l),
            ProxyError::ModelNotAllowed { .. } => "model_not_allowed",
            ProxyError::ClientCredentialsRejected { .. } => "invalid_client_credentials",
            ProxyError::PassthroughAudience { .. } => "token_wrong_audience",
            ProxyError::AdminOnly { .. } => "forbidden",
            ProxyError::UnknownModel { .. } => "model_not_found",
            ProxyError::MissingModel { .. } => "missing_model",
            ProxyError::BodyNotJson { .. } => "invalid_json",
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::AmbiguousDeployment { .. } => "deployment_not_configured",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::BodyRead(_) => "body_read_error",
            ProxyError::IdentityUnavailable { .. } => "identity_unavailable",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::CoolingDown { .. } => "backends_cooling_down",
            ProxyError::BackendBusy { .. } => "backend_busy",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamReset { .. } => "upstream_reset",
            ProxyError::TooManyWebSockets { .. } => "too_many_websockets",
            ProxyError::WebSocketHandshake { .. } => "invalid_websocket_handshake",
            ProxyError::MissingQueryModel { .. } => "missing_model",
            ProxyError::OnBehalfOf(e) => e.code(),
            ProxyError::DuplicateParameter { .. } => "duplicate_parameter",
        }
    }

    /// The fix in one sentence ([`fix_for`] of [`ProxyError::code`]).
    pub fn fix(&self) -> &'static str {
        fix_for(self.code())
    }

    /// The OpenAI `type` that SDKs switch on.
    fn kind(&self) -> &'static str {
        if let ProxyError::Limit(LimitError::Quota { .. } | LimitError::Spend { .. }) = self {
            return "insufficient_quota";
        }
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::NOT_FOUND
            | StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "invalid_request_error",
            _ => "proxy_error",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ProxyError::CoolingDown {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ProxyError::BackendBusy { .. } | ProxyError::TooManyWebSockets { .. } => Some(1),
            ProxyError::Limit(l) => l.retry_after_secs(),
            _ => None,
        };
        let body = serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "type": self.kind(),
            }
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ProxyError::OnBehalfOf(e) = &self
            && let Some(challenge) = e.www_authenticate()
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        } else if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"entra-proxy\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_model_lists_known_models() {
        let e = ProxyError::UnknownModel {
            model: "gpt-5".into(),
            known: vec!["gpt-4o".into(), "emb".into()],
        };
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            e.to_string(),
            "unknown model \"gpt-5\"; this proxy serves: gpt-4o, emb"
        );
    }

    #[test]
    fn identity_unavailable_says_since_when() {
        let e = ProxyError::IdentityUnavailable {
            credential: "managed identity".into(),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            reason: "connection refused".into(),
            since: Some(SystemTime::UNIX_EPOCH),
        };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.to_string()
                .ends_with("(failing since 1970-01-01T00:00:00Z)")
        );
    }

    /// One error of every kind. The exhaustive match in `kind_of` has no `_` arm: a new variant
    /// (here, in `AuthError`, `TokenRejection` or `LimitError`) stops the build there until it
    /// has a sample here and its code is in [`CODES`].
    fn one_of_each() -> Vec<ProxyError> {
        use crate::inbound::issued::IssuedRejection;
        use crate::inbound::{CredentialSource, KeysUnavailable, TokenRejection};
        let s = String::new;
        let rejections = [
            TokenRejection::Malformed(s()),
            TokenRejection::UnsupportedAlgorithm(s()),
            TokenRejection::NoTenant,
            TokenRejection::WrongTenant {
                has: s(),
                allowed: s(),
            },
            TokenRejection::BadIssuer {
                iss: s(),
                tid: s(),
                v1: s(),
                v2: s(),
            },
            TokenRejection::UnknownKey {
                kid: s(),
                tid: s(),
                fetched_secs_ago: 0,
            },
            TokenRejection::BadSignature,
            TokenRejection::Expired { at: s(), ago: s() },
            TokenRejection::NotYetValid { at: s(), in_: s() },
            TokenRejection::WrongAudience {
                has: s(),
                accepted: s(),
                scope: s(),
            },
        ];
        let mut all: Vec<ProxyError> = rejections
            .into_iter()
            .map(|r| ProxyError::Auth(AuthError::TokenRejected(r)))
            .collect();
        all.extend(
            [
                AuthError::MissingCredential,
                AuthError::UnknownKey(CredentialSource::ApiKeyHeader),
                AuthError::MalformedAuthorization(""),
                AuthError::ModeDisabled {
                    mode: "",
                    enabled: vec![],
                },
                AuthError::SigningKeysUnavailable(KeysUnavailable {
                    tenant: s(),
                    reason: s(),
                }),
                AuthError::KeyExpired { name: s(), at: s() },
                AuthError::MissingTenant,
                AuthError::NoIdentity(Box::new(crate::inbound::NoIdentity {
                    tenant: None,
                    object_id: None,
                    app_id: None,
                    groups_overage: false,
                    malformed: vec![],
                })),
                AuthError::IssuedToken(IssuedRejection::Expired { at: s() }),
                AuthError::IssuedToken(IssuedRejection::Invalid),
                AuthError::IssuedToken(IssuedRejection::Revoked { caller: s() }),
                AuthError::IssueNotForCaller { caller: s() },
            ]
            .map(ProxyError::Auth),
        );
        all.extend(
            [
                LimitError::Requests {
                    who: s(),
                    limit: 1,
                    retry_after_secs: 1,
                },
                LimitError::Tokens {
                    who: s(),
                    limit: 1,
                    retry_after_secs: 1,
                },
                LimitError::Quota {
                    who: s(),
                    limit: 1,
                    period: "month",
                    resets_at: s(),
                    retry_after_secs: 1,
                },
                LimitError::Spend {
                    who: s(),
                    spent: 1,
                    budget: 1,
                    currency: Box::from("USD"),
                    period: "day",
                    resets_at: 0,
                    retry_after_secs: 1,
                },
                LimitError::TooLarge {
                    who: s(),
                    need: s(),
                    limit: s(),
                    fix: s(),
                },
                LimitError::StoreUnavailable,
            ]
            .map(ProxyError::Limit),
        );
        all.extend([
            ProxyError::AdminOnly {
                endpoint: "/status",
            },
            ProxyError::ModelNotAllowed {
                caller: s(),
                wanted: s(),
                allowed: vec![],
            },
            ProxyError::ClientCredentialsRejected { code: 0, fix: s() },
            ProxyError::PassthroughAudience {
                has: s(),
                needs: s(),
                backend: s(),
                scope: s(),
            },
            ProxyError::UnknownModel {
                model: s(),
                known: vec![],
            },
            ProxyError::MissingModel { known: vec![] },
            ProxyError::BodyNotJson {
                path: s(),
                reason: s(),
            },
            ProxyError::NoRoute {
                path: s(),
                hint: s(),
            },
            ProxyError::AmbiguousDeployment {
                deployment: s(),
                known: vec![],
            },
            ProxyError::BodyTooLarge { limit: 1 },
            ProxyError::HeadersTooLarge { size: 2, limit: 1 },
            ProxyError::BodyRead(s()),
            ProxyError::IdentityUnavailable {
                credential: s(),
                scope: s(),
                reason: s(),
                since: None,
            },
            ProxyError::CoolingDown {
                retry_after_secs: 1,
                backends: vec![],
            },
            ProxyError::BackendBusy {
                backend: s(),
                max_concurrent: 1,
                waited_ms: 1,
            },
            ProxyError::TooManyWebSockets { max: 1 },
            ProxyError::WebSocketHandshake { reason: "" },
            ProxyError::MissingQueryModel {
                param: "model",
                known: vec![],
            },
            ProxyError::DuplicateParameter {
                name: "model",
                place: "query",
            },
            ProxyError::UpstreamUnreachable {
                backend: s(),
                reason: s(),
            },
            ProxyError::UpstreamTimeout {
                backend: s(),
                limit: "",
                limit_secs: 1.0,
            },
            ProxyError::UpstreamReset {
                backend: s(),
                detail: "",
            },
        ]);
        use crate::identity::OboError;
        all.extend(
            [
                OboError::ConsentRequired {
                    client_id: s(),
                    consent_url: s(),
                },
                OboError::InteractionRequired {
                    code: 50076,
                    reason: s(),
                    claims: None,
                },
                OboError::AssertionRejected {
                    code: 50013,
                    reason: s(),
                },
                OboError::ClientRejected {
                    code: 7000215,
                    client_id: s(),
                    setting: "",
                    fix: s(),
                },
                OboError::Unavailable { reason: s() },
                OboError::NoUser { claim: "oid" },
            ]
            .map(ProxyError::OnBehalfOf),
        );
        for e in &all {
            kind_of(e);
        }
        all
    }

    /// No `_` arms: see [`one_of_each`].
    fn kind_of(e: &ProxyError) {
        use crate::inbound::TokenRejection as R;
        match e {
            ProxyError::Auth(a) => match a {
                AuthError::TokenRejected(r) => match r {
                    R::Malformed(_)
                    | R::UnsupportedAlgorithm(_)
                    | R::NoTenant
                    | R::WrongTenant { .. }
                    | R::BadIssuer { .. }
                    | R::UnknownKey { .. }
                    | R::BadSignature
                    | R::Expired { .. }
                    | R::NotYetValid { .. }
                    | R::WrongAudience { .. } => {}
                },
                AuthError::MissingCredential
                | AuthError::UnknownKey(_)
                | AuthError::MalformedAuthorization(_)
                | AuthError::ModeDisabled { .. }
                | AuthError::SigningKeysUnavailable(_)
                | AuthError::KeyExpired { .. }
                | AuthError::MissingTenant
                | AuthError::NoIdentity(_)
                | AuthError::IssueNotForCaller { .. } => {}
                AuthError::IssuedToken(r) => match r {
                    crate::inbound::issued::IssuedRejection::Expired { .. }
                    | crate::inbound::issued::IssuedRejection::Invalid
                    | crate::inbound::issued::IssuedRejection::Revoked { .. } => {}
                },
            },
            ProxyError::Limit(l) => match l {
                LimitError::Requests { .. }
                | LimitError::Tokens { .. }
                | LimitError::Quota { .. }
                | LimitError::Spend { .. }
                | LimitError::TooLarge { .. }
                | LimitError::StoreUnavailable => {}
            },
            ProxyError::AdminOnly { .. }
            | ProxyError::ModelNotAllowed { .. }
            | ProxyError::ClientCredentialsRejected { .. }
            | ProxyError::PassthroughAudience { .. }
            | ProxyError::UnknownModel { .. }
            | ProxyError::MissingModel { .. }
            | ProxyError::BodyNotJson { .. }
            | ProxyError::NoRoute { .. }
            | ProxyError::AmbiguousDeployment { .. }
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BodyRead(_)
            | ProxyError::IdentityUnavailable { .. }
            | ProxyError::CoolingDown { .. }
            | ProxyError::BackendBusy { .. }
            | ProxyError::TooManyWebSockets { .. }
            | ProxyError::WebSocketHandshake { .. }
            | ProxyError::MissingQueryModel { .. }
            | ProxyError::DuplicateParameter { .. }
            | ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamReset { .. } => {}
            ProxyError::OnBehalfOf(o) => match o {
                crate::identity::OboError::ConsentRequired { .. }
                | crate::identity::OboError::InteractionRequired { .. }
                | crate::identity::OboError::AssertionRejected { .. }
                | crate::identity::OboError::ClientRejected { .. }
                | crate::identity::OboError::Unavailable { .. }
                | crate::identity::OboError::NoUser { .. } => {}
            },
        }
    }

    #[test]
    fn every_code_is_listed() {
        let produced: std::collections::BTreeSet<&str> =
            one_of_each().iter().map(ProxyError::code).collect();
        let listed: std::collections::BTreeSet<&str> = CODES.iter().copied().collect();
        assert_eq!(listed.len(), CODES.len(), "a code is listed twice");
        assert_eq!(produced, listed);
    }

    #[test]
    fn every_code_has_a_fix_of_one_sentence() {
        for code in CODES {
            let fix = fix_for(code);
            assert!(fix.ends_with('.'), "{code}: {fix:?}");
            assert_eq!(
                fix.matches(". ").count(),
                0,
                "{code}: one sentence, not several: {fix}"
            );
        }
        assert_eq!(fix_for("not-a-code"), "");
    }

    #[test]
    fn oversized_headers_are_431_naming_the_setting() {
        let e = ProxyError::HeadersTooLarge {
            size: 9000,
            limit: 8192,
        };
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(e.kind(), "invalid_request_error");
        assert!(e.to_string().contains("server.max_header_bytes"), "{e}");
        assert!(e.fix().contains("max_header_bytes"));
    }
}
