//! Turns a request's credential headers into a [`Caller`]: who is calling and what the proxy
//! will present upstream on their behalf. One file per kind of client credential.

mod client_credentials;
mod entra;
mod error;
mod keys;
mod policy;
pub mod query;
pub mod subprotocol;

pub use client_credentials::{AppCredential, TENANT_HEADER, parse_basic};
pub use entra::{
    EntraError, EntraUse, EntraValidator, KeysUnavailable, TokenRejection, check_lifetime,
    human_duration,
};
pub use error::{AuthError, CredentialSource};
pub use keys::{KeyHolder, KeyStore, generate_key};
pub use policy::{KeyPolicy, PolicyDenial};

use crate::claims::{self, Claims};
use crate::config::{Config, InboundConfig, InboundMode};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName};
use secrecy::SecretString;
use std::borrow::Cow;
use std::sync::Arc;

/// The `api-key` header Azure SDKs send.
pub const API_KEY: HeaderName = HeaderName::from_static("api-key");
/// The key header Cognitive Services clients (Speech, Language, …) send.
pub const SUBSCRIPTION_KEY: HeaderName = HeaderName::from_static("ocp-apim-subscription-key");

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A proxy-issued virtual key.
    VirtualKey {
        name: Arc<str>,
        policy: Arc<KeyPolicy>,
    },
    /// An old Azure resource key, accepted so clients need not change; never forwarded.
    LegacyKey {
        name: Arc<str>,
        policy: Arc<KeyPolicy>,
    },
    /// A validated Entra token: forwarded as it is, or swapped for the proxy's token.
    Entra {
        claims: Arc<Claims>,
        use_: EntraUse,
        token: SecretString,
    },
    /// A service principal's client credentials, exchanged for that app's own token.
    App(Arc<AppCredential>),
    /// No credential, allowed because the proxy is a loopback sidecar (or explicitly configured).
    Anonymous,
}

/// [`Caller::label`]: written straight into a log line, no string built per request.
#[derive(Debug, Clone, Copy)]
pub struct CallerLabel<'a>(&'a Caller);

impl std::fmt::Display for CallerLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Caller::VirtualKey { name, .. } => write!(f, "key:{name}"),
            Caller::LegacyKey { name, .. } => write!(f, "legacy-key:{name}"),
            Caller::Entra { claims, .. } => write!(
                f,
                "entra:{}",
                claims
                    .app_id()
                    .or(claims.oid.as_deref())
                    .unwrap_or("unknown")
            ),
            Caller::App(app) => write!(f, "app:{}", app.client_id),
            Caller::Anonymous => f.write_str("anonymous"),
        }
    }
}

impl Caller {
    /// A name safe to log and to return in headers: never a credential.
    pub fn label(&self) -> CallerLabel<'_> {
        CallerLabel(self)
    }

    /// The key policy that applies, if the caller used a key.
    pub fn policy(&self) -> Option<&KeyPolicy> {
        match self {
            Caller::VirtualKey { policy, .. } | Caller::LegacyKey { policy, .. } => Some(policy),
            _ => None,
        }
    }
}

/// Authenticates requests against the configured client credentials.
#[derive(Debug)]
pub struct Authenticator {
    keys: KeyStore,
    allow_unauthenticated: bool,
    inbound: InboundConfig,
    entra: Option<EntraValidator>,
}

/// The credential a request carries, before it is checked.
enum Presented<'a> {
    Key(Cow<'a, str>, CredentialSource),
    Jwt(&'a str),
    Basic(&'a str),
}

impl Authenticator {
    /// Checks callers against `config`; keys count against their accounts in `limits`.
    pub fn new(config: &Config, limits: &crate::limits::Limits) -> Result<Authenticator, String> {
        let entra = match &config.inbound.entra {
            Some(e) => Some(EntraValidator::new(config, e)?),
            None => None,
        };
        Ok(Authenticator {
            keys: KeyStore::new(&config.keys, limits),
            allow_unauthenticated: config.allow_unauthenticated,
            inbound: config.inbound.clone(),
            entra,
        })
    }

    fn require(&self, mode: InboundMode) -> Result<(), AuthError> {
        if self.inbound.allows(mode) {
            Ok(())
        } else {
            Err(AuthError::ModeDisabled {
                mode: mode.name(),
                enabled: self.inbound.modes.iter().map(|m| m.name()).collect(),
            })
        }
    }

    /// [`Authenticator::authenticate_request`] for a request without a query string.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        self.authenticate_request(headers, None).await
    }

    /// Authenticates by the credential headers, else an `api-key`/`subscription-key` query
    /// parameter, else an `openai-insecure-api-key.<key>` WebSocket subprotocol.
    pub async fn authenticate_request(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let Some(presented) = presented_credential(headers, query, self.entra.is_some())? else {
            return if self.allow_unauthenticated {
                Ok(Caller::Anonymous)
            } else {
                Err(AuthError::MissingCredential)
            };
        };
        match presented {
            Presented::Key(value, source) => {
                if self.allow_unauthenticated && self.keys.is_empty() {
                    return Ok(Caller::Anonymous);
                }
                self.require(InboundMode::Key)?;
                let holder = self
                    .keys
                    .lookup(&value)
                    .ok_or(AuthError::UnknownKey(source))?;
                let policy = holder.policy.clone();
                policy
                    .admit(time::OffsetDateTime::now_utc())
                    .map_err(|d| match d {
                        PolicyDenial::Expired { at } => AuthError::KeyExpired {
                            name: holder.name.to_string(),
                            at,
                        },
                    })?;
                let name = holder.name.clone();
                Ok(if holder.legacy {
                    Caller::LegacyKey { name, policy }
                } else {
                    Caller::VirtualKey { name, policy }
                })
            }
            Presented::Jwt(token) => {
                self.require(InboundMode::Entra)?;
                let Some(validator) = &self.entra else {
                    return Err(AuthError::ModeDisabled {
                        mode: InboundMode::Entra.name(),
                        enabled: self.inbound.modes.iter().map(|m| m.name()).collect(),
                    });
                };
                // Boxed: it may fetch signing keys, and key callers should not carry that state.
                let (claims, use_) =
                    Box::pin(validator.validate(token))
                        .await
                        .map_err(|e| match e {
                            EntraError::Rejected(r) => AuthError::TokenRejected(r),
                            EntraError::KeysUnavailable(k) => AuthError::SigningKeysUnavailable(k),
                        })?;
                Ok(Caller::Entra {
                    claims: Arc::new(claims),
                    use_,
                    token: SecretString::from(token.to_string()),
                })
            }
            Presented::Basic(value) => {
                self.require(InboundMode::ClientCredentials)?;
                let cc =
                    self.inbound
                        .client_credentials
                        .as_ref()
                        .ok_or(AuthError::ModeDisabled {
                            mode: InboundMode::ClientCredentials.name(),
                            enabled: self.inbound.modes.iter().map(|m| m.name()).collect(),
                        })?;
                let (client_id, secret) =
                    parse_basic(value).map_err(AuthError::MalformedAuthorization)?;
                let header_tenant = headers
                    .get(TENANT_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty());
                let tenant = match (header_tenant, cc.allow_tenant_header, &cc.tenant_id) {
                    (Some(t), true, _) => {
                        if !client_credentials::valid_tenant(t) {
                            return Err(AuthError::MalformedAuthorization(
                                "x-ms-tenant-id is not a tenant id",
                            ));
                        }
                        t.to_ascii_lowercase()
                    }
                    (_, _, Some(t)) => t.clone(),
                    (_, _, None) => return Err(AuthError::MissingTenant),
                };
                Ok(Caller::App(Arc::new(AppCredential::new(
                    &tenant, &client_id, secret,
                ))))
            }
        }
    }
}

/// The credential a request carries: `api-key` first (Azure SDKs), then
/// `Ocp-Apim-Subscription-Key` (Cognitive Services clients), then `Authorization`:
/// `Bearer <JWT>` (Entra), `Bearer <key>` (OpenAI SDKs), or `Basic` (client credentials); then
/// a key in the query string, then one in a WebSocket subprotocol (browsers).
fn presented_credential<'a>(
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
        if let Some(key) = query::credential(query) {
            return Ok(Some(Presented::Key(key, CredentialSource::QueryParameter)));
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
    if claims::looks_like_jwt(value) && entra_enabled {
        return Ok(Some(Presented::Jwt(value)));
    }
    if claims::looks_like_jwt(value) {
        return Err(AuthError::ModeDisabled {
            mode: InboundMode::Entra.name(),
            enabled: vec![],
        });
    }
    Ok(Some(Presented::Key(
        Cow::Borrowed(value),
        CredentialSource::BearerHeader,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(extra: &str) -> Authenticator {
        let text = format!(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='a'\ndeployment='d'\n{extra}"
        );
        let c = Config::parse(&text, "t", &|_| None).unwrap();
        Authenticator::new(&c, &crate::limits::Limits::in_memory()).unwrap()
    }

    fn key_block(name: &str, key: &str, legacy: bool) -> String {
        format!(
            "[[keys]]\nname='{name}'\nsha256='{}'\nlegacy={legacy}\n",
            crate::config::KeyDigest::of(key).to_hex()
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[tokio::test]
    async fn api_key_and_bearer_are_both_accepted() {
        let a = auth(&(key_block("a", "k1", false) + &key_block("old", "k2", true)));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "k1")])).await,
            Ok(Caller::VirtualKey { .. })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Bearer k1")]))
                .await,
            Ok(Caller::VirtualKey { .. })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "k2")])).await,
            Ok(Caller::LegacyKey { .. })
        ));
    }

    #[tokio::test]
    async fn missing_wrong_and_malformed_are_rejected() {
        let a = auth(&key_block("a", "k1", false));
        assert!(matches!(
            a.authenticate(&headers(&[])).await,
            Err(AuthError::MissingCredential)
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "nope")])).await,
            Err(AuthError::UnknownKey(CredentialSource::ApiKeyHeader))
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Digest abc")]))
                .await,
            Err(AuthError::MalformedAuthorization(_))
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Bearer ")]))
                .await,
            Err(AuthError::MalformedAuthorization(_))
        ));
        // client credentials are off by default
        assert!(matches!(
            a.authenticate(&headers(&[("authorization", "Basic YTpi")]))
                .await,
            Err(AuthError::ModeDisabled {
                mode: "client-credentials",
                ..
            })
        ));
        assert!(matches!(
            a.authenticate(&headers(&[(
                "authorization",
                "Bearer eyJhbGciOiJSUzI1NiJ9.eyJ9.sig"
            )]))
            .await,
            Err(AuthError::ModeDisabled { mode: "entra", .. })
        ));
    }

    #[tokio::test]
    async fn sidecar_mode_lets_anyone_in() {
        let a = auth("");
        assert!(matches!(
            a.authenticate(&headers(&[])).await,
            Ok(Caller::Anonymous)
        ));
        assert!(matches!(
            a.authenticate(&headers(&[("api-key", "whatever")])).await,
            Ok(Caller::Anonymous)
        ));
    }

    #[tokio::test]
    async fn client_credentials_take_the_tenant_from_config_or_header() {
        let a = auth(
            &(key_block("a", "k1", false)
                + "[inbound.client_credentials]\ntenant_id='t1'\nallow_tenant_header=true\n"),
        );
        let basic = "Basic YXBwLTE6c2VjcmV0"; // app-1:secret
        let Ok(Caller::App(app)) = a.authenticate(&headers(&[("authorization", basic)])).await
        else {
            panic!("expected an app caller")
        };
        assert_eq!(app.tenant, "t1");
        let Ok(Caller::App(app)) = a
            .authenticate(&headers(&[
                ("authorization", basic),
                ("x-ms-tenant-id", "T2"),
            ]))
            .await
        else {
            panic!("expected an app caller")
        };
        assert_eq!(app.tenant, "t2");
        assert_eq!(app.client_id, "app-1");
    }
}
