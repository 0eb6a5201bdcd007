//! What a request reads: the validated config, the authenticator, routes and the one list of
//! backends (health and metric handles included), token caches, built once at start-up and
//! shared by every serving thread.

use crate::config::Config;
use crate::identity::{AppTokens, IdentityEnv, TokenCache, build_token_source};
use crate::inbound::Authenticator;
use crate::routing::RoutingTable;

/// Everything a request needs, built once at start-up.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub auth: Authenticator,
    /// Routes, and every backend by [`crate::backends::BackendId`].
    pub routes: RoutingTable,
    pub tokens: TokenCache,
    /// Token caches of client-credentials callers, when that mode is configured.
    pub apps: Option<AppTokens>,
    pub metrics: crate::telemetry::Metrics,
    pub request_metrics: crate::telemetry::RequestMetrics,
}

impl AppState {
    /// Builds the state from a validated config. Fails on problems that only show when the
    /// identity or HTTP client is built (e.g. workload identity without its token file).
    pub fn build(config: Config, env: &IdentityEnv) -> Result<AppState, String> {
        let source = build_token_source(&config, env)?;
        let tokens = TokenCache::new(source, config.upstream.identity_timeout);
        // Fails here, at start-up, rather than in a worker.
        crate::upstream::Client::new(config.upstream.connect_timeout)?;
        let apps = config
            .inbound
            .client_credentials
            .as_ref()
            .map(|cc| AppTokens::new(&config, cc.max_apps));
        // Installed before anything registers a metric handle.
        let metrics = crate::telemetry::Metrics::install();
        let routes = RoutingTable::new(&config);
        let request_metrics = crate::telemetry::RequestMetrics::new(routes.model_names().to_vec());
        Ok(AppState {
            auth: Authenticator::new(&config)?,
            apps,
            metrics,
            request_metrics,
            routes,
            tokens,
            config,
        })
    }
}
