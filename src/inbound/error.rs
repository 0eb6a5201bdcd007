//! Why a request's credential was refused: the inbound step's own error, which
//! [`crate::error::ProxyError`] wraps and maps to HTTP.

use super::{KeysUnavailable, TokenRejection};

/// Which credential-carrying header a rejected credential came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    ApiKeyHeader,
    /// The `Ocp-Apim-Subscription-Key` header of Cognitive Services clients (Speech, Language).
    SubscriptionKeyHeader,
    BearerHeader,
    /// An `api-key`, `subscription-key` or `Ocp-Apim-Subscription-Key` query parameter (or a
    /// key as `Authorization=Bearer …` in the query, as the Speech SDK sends from browsers).
    QueryParameter,
    /// An `openai-insecure-api-key.<key>` WebSocket subprotocol.
    Subprotocol,
}

impl CredentialSource {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            CredentialSource::ApiKeyHeader => "api-key header",
            CredentialSource::SubscriptionKeyHeader => "Ocp-Apim-Subscription-Key header",
            CredentialSource::BearerHeader => "Authorization: Bearer header",
            CredentialSource::QueryParameter => "api-key query parameter",
            CredentialSource::Subprotocol => "openai-insecure-api-key WebSocket subprotocol",
        }
    }
}

/// A credential the proxy refuses (401), or cannot check right now (503).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credential: send a proxy key as `api-key: <key>` or `Authorization: Bearer <key>`")]
    MissingCredential,
    #[error("the key in the {} is not a key this proxy knows", .0.describe())]
    UnknownKey(CredentialSource),
    #[error("malformed credential: {0}")]
    MalformedAuthorization(&'static str),
    #[error("this proxy does not accept {mode} credentials (enabled: {}); see [inbound] modes", if .enabled.is_empty() { "none of that kind".to_string() } else { .enabled.join(", ") })]
    ModeDisabled {
        mode: &'static str,
        enabled: Vec<&'static str>,
    },
    #[error("Entra token rejected: {0}")]
    TokenRejected(TokenRejection),
    #[error("{0}; the caller's token cannot be checked right now")]
    SigningKeysUnavailable(KeysUnavailable),
    #[error("key {name:?} expired at {at}; ask for a new key")]
    KeyExpired { name: String, at: String },
    #[error(
        "client credentials need a tenant: send it in the x-ms-tenant-id header (if allowed) or set [inbound.client_credentials] tenant_id"
    )]
    MissingTenant,
    #[error("{0}")]
    NoIdentity(Box<super::identities::NoIdentity>),
    #[error("{0}")]
    IssuedToken(super::issued::IssuedRejection),
    #[error(
        "{caller} reaches Azure as itself (its own Entra token or app), so the proxy issues it no token: call the service with that credential directly"
    )]
    IssueNotForCaller { caller: String },
}
