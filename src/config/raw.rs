//! The configuration file as written: `#[serde(deny_unknown_fields)]` types that mirror the TOML,
//! before any value is checked. [`super::validate`] turns them into the typed [`super::Config`].

use super::{ApiShape, InboundMode};
use crate::cloud::Cloud;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) azure: RawAzure,
    pub(super) identity: Option<RawIdentity>,
    #[serde(default)]
    pub(super) backends: Vec<RawBackend>,
    #[serde(default)]
    pub(super) models: Vec<RawModel>,
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
    #[serde(default)]
    pub(super) identities: Vec<RawIdentityEntry>,
    pub(super) on_behalf_of: Option<RawOnBehalfOf>,
    #[serde(default)]
    pub(super) inbound: RawInbound,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
}

/// `[telemetry]`: where traces go (OTLP over HTTP) and which are kept.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) service_name: Option<String>,
    pub(super) sample_ratio: Option<f64>,
}

/// `[limits]`: where per-key request and token counters live.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) redis_url: Option<SecretString>,
    pub(super) on_redis_error: Option<String>,
    pub(super) redis_timeout_ms: Option<i64>,
    /// PEM file of the CA(s) a `rediss://` server's certificate must chain to, instead of the
    /// system's roots; relative to the config file.
    pub(super) redis_ca_file: Option<String>,
    /// Per-user counters kept in memory at once (least recently used go first).
    pub(super) max_users: Option<i64>,
    /// Tokens reserved for the answer of a request that names no `max_tokens`.
    pub(super) default_completion_reservation: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbound {
    pub(super) allow_unauthenticated: Option<bool>,
    pub(super) modes: Option<Vec<InboundMode>>,
    pub(super) entra: Option<RawEntraInbound>,
    pub(super) client_credentials: Option<RawClientCredentials>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntraInbound {
    pub(super) tenants: Vec<String>,
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    pub(super) passthrough: Option<bool>,
    pub(super) jwks_url: Option<String>,
    /// `deny` or `allow`: an Entra or app caller no `[[identities]]` block matches.
    pub(super) unmatched: Option<String>,
    /// What reaches Azure for an Entra caller by default: `proxy`, `caller`, `on-behalf-of`.
    pub(super) upstream: Option<String>,
}

/// `[on_behalf_of]`: the proxy's app registration, and how it proves it is that app, for the
/// on-behalf-of exchange.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnBehalfOf {
    pub(super) client_id: String,
    pub(super) tenant_id: String,
    pub(super) credential: String,
    pub(super) client_secret: Option<SecretString>,
    pub(super) client_secret_file: Option<String>,
    pub(super) certificate_file: Option<String>,
    pub(super) private_key_file: Option<String>,
    pub(super) max_users: Option<i64>,
    /// The files named above, as read (path, text or why not), before validation.
    #[serde(skip)]
    pub(super) read: Vec<(String, Result<String, String>)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientCredentials {
    pub(super) tenant_id: Option<String>,
    #[serde(default)]
    pub(super) allow_tenant_header: bool,
    pub(super) max_apps: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) shutdown_grace_secs: Option<u64>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) header_read_timeout_secs: Option<f64>,
    #[serde(default)]
    pub(super) debug: bool,
    pub(super) admin_key_sha256: Option<String>,
    pub(super) workers: Option<usize>,
    /// A file of more `[[keys]]` blocks, read and watched beside this one.
    pub(super) keys_file: Option<String>,
    pub(super) max_websockets: Option<usize>,
    pub(super) websocket_idle_timeout_secs: Option<f64>,
    /// The proxy's external URL, for links in answers that point at a backend.
    pub(super) public_url: Option<String>,
    /// The HMAC secret of `issueToken` tokens, shared by replicas; default a per-process one.
    pub(super) issued_token_secret: Option<SecretString>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) connect_timeout_secs: Option<f64>,
    pub(super) first_byte_timeout_secs: Option<f64>,
    pub(super) identity_timeout_secs: Option<f64>,
    pub(super) idle_timeout_secs: Option<f64>,
    pub(super) request_timeout_secs: Option<f64>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retry_buffer_bytes: Option<usize>,
    #[serde(default)]
    pub(super) replay_after_timeout: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzure {
    #[serde(default)]
    pub(super) cloud: Cloud,
    pub(super) emulator: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RawIdentityKind {
    Auto,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) kind: RawIdentityKind,
    pub(super) client_id: Option<String>,
    pub(super) tenant_id: Option<String>,
    pub(super) client_secret: Option<SecretString>,
    pub(super) federated_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: String,
    pub(super) endpoint: String,
    pub(super) api_version: Option<String>,
    pub(super) scope: Option<String>,
    #[serde(default)]
    pub(super) api: ApiShape,
    #[serde(default)]
    pub(super) deployments: Vec<String>,
    pub(super) max_concurrent: Option<usize>,
    pub(super) queue_timeout_secs: Option<f64>,
    /// `openai` (default), `speech`, `translator`, `search` or `cognitive`.
    pub(super) service: Option<crate::services::Service>,
    /// The account's ARM id: Speech's `aad#…` form, Translator's `Ocp-Apim-ResourceId`.
    pub(super) resource_id: Option<String>,
    /// Translator's region, sent as `Ocp-Apim-Subscription-Region`.
    pub(super) region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) name: String,
    pub(super) backend: Option<String>,
    pub(super) deployment: Option<String>,
    pub(super) targets: Option<Vec<RawTarget>>,
    /// What the model costs, per million tokens.
    pub(super) price: Option<RawPrice>,
    /// Overrides `[limits] default_completion_reservation` for this model.
    pub(super) completion_reservation: Option<i64>,
}

/// `[[models]] price = { … }`: per million tokens, in `currency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    pub(super) input_per_1m: f64,
    pub(super) output_per_1m: f64,
    pub(super) cached_input_per_1m: Option<f64>,
    pub(super) currency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) backend: String,
    pub(super) deployment: String,
    #[serde(default)]
    pub(super) priority: u32,
    pub(super) weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) name: String,
    pub(super) sha256: String,
    #[serde(default)]
    pub(super) legacy: bool,
    #[serde(default)]
    pub(super) models: Vec<String>,
    pub(super) expires: Option<String>,
    pub(super) requests_per_minute: Option<u32>,
    pub(super) tokens_per_minute: Option<i64>,
    pub(super) token_quota: Option<i64>,
    pub(super) token_quota_period: Option<String>,
    /// Money per `budget_period`, in the models' price currency.
    pub(super) budget: Option<f64>,
    pub(super) budget_period: Option<String>,
    /// The keys file this key was read from; `None` for the main config file.
    #[serde(skip)]
    pub(super) file: Option<String>,
}

/// `[[identities]]`: Entra principals matched by their token's claims, with a policy like a
/// key's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityEntry {
    pub(super) name: String,
    pub(super) app_id: Option<String>,
    pub(super) object_id: Option<String>,
    pub(super) group: Option<String>,
    pub(super) role: Option<String>,
    pub(super) tenant: Option<String>,
    #[serde(default)]
    pub(super) models: Vec<String>,
    pub(super) requests_per_minute: Option<u32>,
    pub(super) tokens_per_minute: Option<i64>,
    pub(super) token_quota: Option<i64>,
    pub(super) token_quota_period: Option<String>,
    pub(super) per_user_tokens_per_minute: Option<i64>,
    pub(super) per_user_token_quota: Option<i64>,
    /// What reaches Azure for this identity's Entra callers.
    pub(super) upstream: Option<String>,
    /// Money per `budget_period`, shared by everyone the identity matches.
    pub(super) budget: Option<f64>,
    pub(super) budget_period: Option<String>,
    /// The keys file this identity was read from; `None` for the main config file.
    #[serde(skip)]
    pub(super) file: Option<String>,
}

/// A keys file (`[server] keys_file`): `[[keys]]` and `[[identities]]` blocks and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeysFile {
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
    #[serde(default)]
    pub(super) identities: Vec<RawIdentityEntry>,
}

impl RawIdentityKind {
    /// The name as written in `kind = "…"`.
    pub(super) fn name(self) -> &'static str {
        match self {
            RawIdentityKind::Auto => "auto",
            RawIdentityKind::ManagedIdentity => "managed-identity",
            RawIdentityKind::WorkloadIdentity => "workload-identity",
            RawIdentityKind::ClientSecret => "client-secret",
            RawIdentityKind::AzureCli => "azure-cli",
        }
    }
}
