//! The upstream bearer of a request: which token goes to Azure for this caller and backend,
//! from the caches the identity module keeps, with failures as the caller's error.

use crate::error::ProxyError;
use crate::identity::{AppTokens, Lookup, OboError, OboTokens, TokenCache, UpstreamToken};

/// Where upstream bearers come from: the proxy's own tokens, client-credentials apps' tokens
/// (while that mode is on), delegated tokens (while on-behalf-of is configured).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bearers<'a> {
    pub(super) tokens: &'a TokenCache,
    pub(super) apps: Option<&'a AppTokens>,
    pub(super) obo: Option<&'a OboTokens>,
}

/// Picks the upstream bearer for a caller and backend — the caller's own token (passthrough,
/// only when minted for this backend's audience), the user's delegated token (on-behalf-of),
/// the caller's app token (client credentials), or the proxy's own token — and says how it
/// was had (for the request's trace).
pub(super) async fn token_lookup(
    bearers: Bearers<'_>,
    caller: &crate::inbound::Caller,
    backend: &crate::config::Backend,
) -> Result<(UpstreamToken, Lookup), ProxyError> {
    use crate::inbound::{AuthError, EntraUse, Held};
    let Bearers { tokens, apps, obo } = bearers;
    match &caller.held {
        Held::Entra {
            claims,
            use_: EntraUse::OnBehalfOf,
            token,
        } => {
            let Some(obo) = obo else {
                return Err(ProxyError::OnBehalfOf(OboError::Unavailable {
                    reason: "no [on_behalf_of] section is configured".into(),
                }));
            };
            // Boxed: an exchange is rare next to cached tokens, and its state is large.
            let (token, lookup) = Box::pin(obo.token(claims, token, &backend.scope))
                .await
                .map_err(ProxyError::OnBehalfOf)?;
            let scope = backend.scope.clone();
            Ok((UpstreamToken::Delegated { token, scope }, lookup))
        }
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
) -> Result<(UpstreamToken, Lookup), ProxyError> {
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
) -> Result<(UpstreamToken, Lookup), ProxyError> {
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
                fix: crate::identity::aadsts_fix(code, &app.client_id, &app.tenant),
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
