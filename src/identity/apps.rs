//! Tokens for client-credentials callers: one token cache per app, keyed by the digest of
//! (tenant, client id, secret), bounded in number.

use super::azure::client_secret_source;
use super::{CachedToken, IdentityError, TokenCache};
use crate::config::{Config, Scope};
use crate::inbound::AppCredential;
use std::sync::Arc;

/// Per-app token caches.
#[derive(Debug, Clone)]
pub struct AppTokens {
    config: Arc<Config>,
    apps: moka::future::Cache<[u8; 32], TokenCache>,
}

impl AppTokens {
    pub fn new(config: &Config, max_apps: u64) -> AppTokens {
        AppTokens {
            config: Arc::new(config.clone()),
            apps: moka::future::Cache::builder()
                .max_capacity(max_apps)
                .time_to_idle(std::time::Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// The app's own token for `scope`; concurrent cold requests for one app make one grant.
    pub async fn get(
        &self,
        app: &AppCredential,
        scope: &Scope,
    ) -> Result<(Arc<CachedToken>, super::Lookup), IdentityError> {
        let cache = self
            .apps
            .try_get_with(app.digest, async {
                client_secret_source(
                    &self.config,
                    &app.tenant,
                    &app.client_id,
                    app.secret.clone(),
                )
                .map(|source| TokenCache::new(source, self.config.upstream.identity_timeout))
                .map_err(|reason| IdentityError::Unavailable {
                    credential: format!("client credentials of {}", app.client_id),
                    reason,
                })
            })
            .await
            .map_err(|e: Arc<IdentityError>| (*e).clone())?;
        cache.lookup(scope).await
    }

    /// Forgets an app's token that Azure refused.
    pub async fn invalidate(&self, app: &AppCredential, scope: &Scope, token: &Arc<CachedToken>) {
        if let Some(cache) = self.apps.get(&app.digest).await {
            cache.invalidate(scope, token).await;
        }
    }

    pub fn cached_apps(&self) -> u64 {
        self.apps.entry_count()
    }
}
