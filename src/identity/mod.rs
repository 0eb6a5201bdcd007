//! The proxy's own identity: the [`TokenSource`] seam, its `azure_identity` adapters, and the
//! token cache that keeps a valid bearer ready for every scope.

mod apps;
mod azure;
mod cache;
mod transport;

pub use apps::AppTokens;
pub use azure::{AzureTokenSource, IdentityEnv, build_token_source, client_secret_source};
pub use cache::{CachedToken, Lookup, SlotStatus, TokenCache, expiry_margin, refresh_at};
pub use transport::RewritingTransport;

use crate::config::Scope;
use async_trait::async_trait;
use secrecy::SecretString;
use std::fmt;
use std::time::SystemTime;

/// A bearer token and when it stops being valid.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: SecretString,
    pub expires_at: SystemTime,
    pub acquired_at: SystemTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"****")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why a token could not be had. Messages carry no secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    #[error("{credential} is not available here: {reason}")]
    Unavailable { credential: String, reason: String },
    #[error("{credential} failed: {reason}")]
    Failed {
        credential: String,
        reason: String,
        /// Entra's `AADSTS` error code, when Entra gave one.
        aadsts: Option<u32>,
    },
    #[error("{credential} did not answer within {secs}s")]
    Timeout { credential: String, secs: u64 },
}

/// Anything that can produce tokens for a scope. The one seam for identity: production uses
/// `azure_identity` credentials, tests point those at the emulator.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// Gets a fresh token from the identity provider (no caching here: [`TokenCache`] caches).
    async fn acquire(&self, scope: &Scope) -> Result<AccessToken, IdentityError>;
    /// A human description such as "managed identity (IMDS, system-assigned)".
    fn describe(&self) -> String;
}

/// What goes into the upstream `Authorization` header.
#[derive(Debug, Clone)]
pub enum UpstreamToken {
    /// A token from a cache (the proxy's or a client-credentials app's); may be invalidated.
    Cached {
        token: std::sync::Arc<CachedToken>,
        scope: Scope,
    },
    /// The caller's own Entra token, forwarded as it is.
    Passthrough(axum::http::HeaderValue),
}

impl UpstreamToken {
    pub fn header(&self) -> &axum::http::HeaderValue {
        match self {
            UpstreamToken::Cached { token, .. } => &token.header,
            UpstreamToken::Passthrough(h) => h,
        }
    }

    /// Claims of the token sent upstream, for diagnosis. Never the token.
    pub fn claims(&self) -> Option<crate::claims::Claims> {
        match self {
            UpstreamToken::Cached { token, .. } => token.claims.clone(),
            UpstreamToken::Passthrough(h) => h
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|t| crate::claims::decode_unverified(t).ok())
                .map(|u| u.claims),
        }
    }
}

/// Picks the upstream bearer for a caller and backend: the caller's own token (passthrough,
/// only when minted for this backend's audience), the caller's app token (client credentials),
/// or the proxy's own token.
pub async fn token_for(
    tokens: &TokenCache,
    apps: Option<&AppTokens>,
    caller: &crate::inbound::Caller,
    backend: &crate::config::Backend,
) -> Result<UpstreamToken, crate::error::ProxyError> {
    token_lookup(tokens, apps, caller, backend)
        .await
        .map(|(t, _)| t)
}

/// [`token_for`], saying how the token was had (for the request's trace).
pub async fn token_lookup(
    tokens: &TokenCache,
    apps: Option<&AppTokens>,
    caller: &crate::inbound::Caller,
    backend: &crate::config::Backend,
) -> Result<(UpstreamToken, Lookup), crate::error::ProxyError> {
    use crate::error::ProxyError;
    use crate::inbound::{AuthError, EntraUse, Held};
    match &caller.held {
        Held::Entra {
            claims,
            use_: EntraUse::Passthrough,
            token,
        } => passthrough(claims, token, backend),
        Held::App(app) => {
            let Some(apps) = apps else {
                return Err(AuthError::MissingTenant.into());
            };
            Box::pin(app_token(apps, app, backend)).await
        }
        Held::Key
        | Held::Nothing
        | Held::Issued { .. }
        | Held::Entra {
            use_: EntraUse::Swap,
            ..
        } => match tokens.lookup(&backend.scope).await {
            Ok((token, lookup)) => Ok((
                UpstreamToken::Cached {
                    token,
                    scope: backend.scope.clone(),
                },
                lookup,
            )),
            Err(e) => Err(ProxyError::IdentityUnavailable {
                credential: tokens.describe(),
                scope: backend.scope.to_string(),
                reason: e.to_string(),
                since: tokens.failing_since(&backend.scope).await,
            }),
        },
    }
}

/// The caller's own token, forwarded as it is when it is already for the backend's audience.
fn passthrough(
    claims: &crate::claims::Claims,
    token: &secrecy::SecretString,
    backend: &crate::config::Backend,
) -> Result<(UpstreamToken, Lookup), crate::error::ProxyError> {
    use crate::error::ProxyError;
    use crate::inbound::AuthError;
    use secrecy::ExposeSecret as _;
    let needs = backend.scope.audience();
    let has = claims.audience().unwrap_or("none");
    if !crate::cloud::same_audience(has, needs) {
        return Err(ProxyError::PassthroughAudience {
            has: has.to_string(),
            needs: needs.to_string(),
            backend: backend.name.clone(),
            scope: backend.scope.to_string(),
        });
    }
    let mut h = axum::http::HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
        .map_err(|_| {
            ProxyError::from(AuthError::MalformedAuthorization(
                "the bearer token has characters not allowed in a header",
            ))
        })?;
    h.set_sensitive(true);
    Ok((UpstreamToken::Passthrough(h), Lookup::Passthrough))
}

/// The app's own token, from its client credentials (cached per app and scope).
async fn app_token(
    apps: &AppTokens,
    app: &crate::inbound::AppCredential,
    backend: &crate::config::Backend,
) -> Result<(UpstreamToken, Lookup), crate::error::ProxyError> {
    use crate::error::ProxyError;
    match apps.get(app, &backend.scope).await {
        Ok((token, lookup)) => Ok((
            UpstreamToken::Cached {
                token,
                scope: backend.scope.clone(),
            },
            lookup,
        )),
        Err(e) => match e.aadsts() {
            Some(code) => Err(ProxyError::ClientCredentialsRejected {
                code,
                fix: aadsts_fix(code, &app.client_id, &app.tenant),
            }),
            None => Err(ProxyError::IdentityUnavailable {
                credential: format!("client credentials of app {}", app.client_id),
                scope: backend.scope.to_string(),
                reason: e.to_string(),
                since: None,
            }),
        },
    }
}

impl IdentityError {
    /// Entra's `AADSTS` error code, when the identity provider refused with one.
    pub fn aadsts(&self) -> Option<u32> {
        match self {
            IdentityError::Failed { aadsts, .. } => *aadsts,
            IdentityError::Unavailable { .. } | IdentityError::Timeout { .. } => None,
        }
    }
}

/// The first `AADSTS<digits>` code in a text from Entra (its error descriptions start with one).
pub fn parse_aadsts(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The one-line fix for the AADSTS errors client-credential callers hit.
pub fn aadsts_fix(code: u32, client_id: &str, tenant: &str) -> String {
    match code {
        7000215 => format!(
            "invalid client secret for app {client_id}: send the secret's Value, not its Secret ID (create one with `az ad app credential reset --id {client_id}`)"
        ),
        7000222 => format!(
            "the client secret of app {client_id} has expired: create a new one with `az ad app credential reset --id {client_id}`"
        ),
        700016 => format!(
            "app {client_id} was not found in tenant {tenant}: check the client id, and that the app is registered or consented in that tenant"
        ),
        90002 => format!(
            "tenant {tenant} was not found: check the tenant id (`az account show --query tenantId`)"
        ),
        other => format!(
            "Entra refused the client credentials of app {client_id} in tenant {tenant} (see https://login.microsoftonline.com/error?code={other})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_codes_are_found_and_explained() {
        let reason = "ClientSecretCredential authentication failed. AADSTS7000215: Invalid client secret provided.";
        let e = IdentityError::Failed {
            credential: "client secret".into(),
            reason: reason.into(),
            aadsts: parse_aadsts(reason),
        };
        assert_eq!(e.aadsts(), Some(7000215));
        assert!(aadsts_fix(7000215, "app", "t").contains("Value, not its Secret ID"));
        assert!(aadsts_fix(90002, "app", "t").contains("tenant t was not found"));
        assert_eq!(parse_aadsts("timeout"), None);
        assert_eq!(parse_aadsts("AADSTS: no digits"), None);
        let e = IdentityError::Timeout {
            credential: "x".into(),
            secs: 1,
        };
        assert_eq!(e.aadsts(), None);
    }
}
