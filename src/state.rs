//! What a request reads: the current [`Snapshot`] (validated config, authenticator, routes and
//! the one list of backends), swapped whole on reload, and what outlives a reload — the token
//! caches, the limits store and the metrics recorder.
//!
//! A request takes the snapshot once, when it starts, and keeps it to the end: a reload never
//! changes the keys, routes or limits under a request already running.

use crate::config::{Config, Scope};
use crate::identity::{AppTokens, IdentityEnv, OboTokens, TokenCache, build_token_source};
use crate::inbound::Authenticator;
use crate::inbound::issued::Issuer;
use crate::limits::Limits;
use crate::routing::RoutingTable;
/// The `OTEL_*` variables [`AppState::build_with`] reads traces' settings from.
pub use crate::telemetry::trace::TelemetryEnv;
use crate::telemetry::trace::Tracing;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::SystemTime;

/// The proxy's state: the current snapshot and everything that outlives a reload.
#[derive(Debug)]
pub struct AppState {
    current: ArcSwap<Snapshot>,
    /// The proxy's own token cache, kept across reloads: a scope that stays needs no new token.
    pub tokens: TokenCache,
    /// Token caches of client-credentials callers (used while that mode is configured).
    pub apps: AppTokens,
    pub metrics: crate::telemetry::Metrics,
    /// The last diagnoses and per-caller request counts (the status page), kept across reloads.
    pub recent: Arc<crate::telemetry::recent::Recent>,
    /// Per-key request and token counters, by key name: kept across reloads.
    pub limits: Limits,
    /// The tracer (nothing when traces are off); built once, at start.
    pub tracing: crate::telemetry::trace::Tracing,
    /// The scopes the token keeper refreshes: every backend's, updated on reload.
    scopes: tokio::sync::watch::Sender<Vec<Scope>>,
    /// This process's key for `issueToken` tokens (unless the config names a shared secret):
    /// made at start, kept across reloads, so tokens outlive a reload but not a restart.
    issuer: Arc<Issuer>,
}

/// One validated config and everything built from it, read by a request from start to end.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub auth: Authenticator,
    /// Routes, and every backend by `crate::backends::BackendId`.
    pub routes: RoutingTable,
    pub request_metrics: crate::telemetry::RequestMetrics,
    /// The same caches as [`AppState::tokens`] and [`AppState::apps`] (shared handles); `apps`
    /// only while client credentials are configured.
    pub tokens: TokenCache,
    pub apps: Option<AppTokens>,
    /// Users' delegated tokens, while `[on_behalf_of]` is configured; kept across a reload
    /// that leaves that section alone.
    pub obo: Option<OboTokens>,
    /// The same handle as [`AppState::recent`].
    pub recent: Arc<crate::telemetry::recent::Recent>,
    /// The same store as [`AppState::limits`] (a shared handle).
    pub limits: Limits,
    /// Each configured deployment's model, price and answer reservation.
    pub tariffs: crate::limits::Tariffs,
    /// The same tracer as [`AppState::tracing`].
    pub tracing: crate::telemetry::trace::Tracing,
    /// A digest of the files this snapshot was built from, and when it was built.
    pub origin: Origin,
}

/// Where a snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Hex SHA-256 over the config file and the files it includes, as read.
    pub hash: String,
    pub loaded_at: SystemTime,
}

impl Origin {
    /// The origin of a config given as text (tests, `demo`).
    pub fn of_text(text: &str) -> Origin {
        Origin {
            hash: crate::config::KeyDigest::of(text).to_hex(),
            loaded_at: SystemTime::now(),
        }
    }
}

impl AppState {
    /// Builds the state from a validated config. Fails on problems that only show when the
    /// identity or HTTP client is built (e.g. workload identity without its token file).
    pub fn build(config: Config, env: &IdentityEnv) -> Result<AppState, String> {
        let origin = Origin {
            hash: String::new(),
            loaded_at: SystemTime::now(),
        };
        AppState::build_from(config, env, origin)
    }

    /// [`AppState::build`], recording where the config came from.
    pub fn build_from(
        config: Config,
        env: &IdentityEnv,
        origin: Origin,
    ) -> Result<AppState, String> {
        AppState::build_with(config, env, &TelemetryEnv::default(), origin)
    }

    /// [`AppState::build_from`] with the `OTEL_*` variables that shape traces (`[telemetry]`
    /// keys win over them). Errors name the key or variable at fault.
    pub fn build_with(
        config: Config,
        env: &IdentityEnv,
        otel: &TelemetryEnv,
        origin: Origin,
    ) -> Result<AppState, String> {
        // Installed before anything registers a metric handle.
        let metrics = crate::telemetry::Metrics::install();
        // A malformed OTEL_* variable stops start-up before anything else is built.
        let tracing = Tracing::from_config(&config.telemetry, otel)?;
        let source = build_token_source(&config, env)?;
        let tokens = TokenCache::new(source, config.upstream.identity_timeout);
        // Fails here, at start-up, rather than in a worker.
        crate::upstream::Client::new(config.upstream.connect_timeout)?;
        let max_apps = config
            .inbound
            .client_credentials
            .as_ref()
            .map_or(crate::config::DEFAULT_MAX_APPS, |cc| cc.max_apps);
        let apps = AppTokens::new(&config, max_apps);
        let (scopes, _) = tokio::sync::watch::channel(config.scopes());
        let recent = Arc::new(crate::telemetry::recent::Recent::default());
        let limits = Limits::new(&config.limits)?;
        let issuer = Arc::new(Issuer::random()?);
        let snapshot = Snapshot::build(
            config,
            Shared {
                tokens: tokens.clone(),
                apps: apps.clone(),
                recent: recent.clone(),
                limits: limits.clone(),
                tracing: tracing.clone(),
                obo: None,
                issuer: issuer.clone(),
                before: None,
            },
            origin,
        )?;
        Ok(AppState {
            current: ArcSwap::from_pointee(snapshot),
            tokens,
            apps,
            metrics,
            recent,
            limits,
            tracing,
            scopes,
            issuer,
        })
    }

    /// The snapshot a new request reads.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot of `config` that shares this state's token caches. Nothing is
    /// swapped: see [`AppState::install`].
    pub fn prepare(&self, config: Config, origin: Origin) -> Result<Snapshot, String> {
        Snapshot::build(
            config,
            Shared {
                tokens: self.tokens.clone(),
                apps: self.apps.clone(),
                recent: self.recent.clone(),
                limits: self.limits.clone(),
                tracing: self.tracing.clone(),
                obo: self.snapshot().obo.clone(),
                issuer: self.issuer.clone(),
                before: Some(self.snapshot()),
            },
            origin,
        )
    }

    /// Makes `snapshot` the one new requests read, in one step; requests already running keep
    /// theirs. The token keeper learns the new set of scopes.
    pub fn install(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.scopes.send_replace(snapshot.config.scopes());
        self.current.swap(Arc::new(snapshot))
    }

    /// The scopes to keep tokens for, following reloads.
    pub fn watch_scopes(&self) -> tokio::sync::watch::Receiver<Vec<Scope>> {
        self.scopes.subscribe()
    }
}

/// What every snapshot shares with the state (handles, not copies).
struct Shared {
    tokens: TokenCache,
    apps: AppTokens,
    recent: Arc<crate::telemetry::recent::Recent>,
    limits: Limits,
    tracing: Tracing,
    /// The running snapshot's exchange, reused when `[on_behalf_of]` is unchanged.
    obo: Option<OboTokens>,
    issuer: Arc<Issuer>,
    /// The running snapshot, whose backends' cooldowns and in-flight slots carry over.
    before: Option<Arc<Snapshot>>,
}

impl Snapshot {
    fn build(config: Config, shared: Shared, origin: Origin) -> Result<Snapshot, String> {
        let Shared {
            tokens,
            apps,
            recent,
            limits,
            tracing,
            obo,
            issuer,
            before,
        } = shared;
        let apps = config.inbound.client_credentials.as_ref().map(|_| apps);
        let obo = match &config.on_behalf_of {
            None => None,
            Some(settings) => match obo.filter(|o| o.settings().same_as(settings)) {
                Some(kept) => Some(kept),
                None => Some(OboTokens::new(
                    settings,
                    config.cloud,
                    config.emulator.clone(),
                    tokens.clone(),
                    config.upstream.identity_timeout,
                )?),
            },
        };
        let routes = RoutingTable::following(&config, before.as_ref().map(|b| &b.routes));
        let request_metrics = crate::telemetry::RequestMetrics::new(routes.model_names().to_vec());
        // Counters and gauges of every configured key, resolved before a request needs them.
        recent.register(
            config
                .keys
                .iter()
                .map(|k| crate::inbound::CallerLabel::key(&k.name, k.legacy))
                .chain(config.identities.iter().map(|i| {
                    crate::inbound::CallerLabel::Identity(std::sync::Arc::from(i.name.as_str()))
                })),
        );
        limits.publish_quotas(&config.keys);
        Ok(Snapshot {
            auth: Authenticator::new(&config, &limits)?.with_issuer(&issuer),
            routes,
            request_metrics,
            tokens,
            apps,
            obo,
            recent,
            limits,
            tariffs: crate::limits::Tariffs::new(&config),
            tracing,
            origin,
            config,
        })
    }
}
