//! The validated configuration and where it comes from: [`Config::load`] reads a file,
//! [`Config::parse`] takes text (so tests never touch the process environment). Parsing runs in
//! stages, each in its own file: TOML syntax, `${ENV}` expansion (`env`), the raw serde types
//! (`raw`), then validation (`validate`), which reports every problem with its exact key.
//! Defaults are the named constants below.

mod certificate;
mod emulator;
mod endpoint;
mod env;
mod errors;
mod include;
mod key_digest;
mod label;
pub use label::CallerLabel;
mod raw;
mod render;
mod scope;
#[cfg(test)]
mod testing;
mod validate;

pub use certificate::AppCertificate;
pub use emulator::redirect;
pub use endpoint::{NormalizedEndpoint, normalize_endpoint};
pub use errors::ConfigError;
pub use include::{
    MAX_FILE_BYTES, SourceFile, Sources, digest as digest_files, digest_on_disk,
    keys_file_identity_names, keys_file_names, read_bounded,
};
pub use key_digest::KeyDigest;
pub use render::render_normalized;
pub use scope::Scope;

use crate::cloud::{Cloud, HostKind};
use errors::Errors;
use raw::RawConfig;
use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Default listen address: loopback, so a fresh install is never open to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default maximum request body: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Default largest request head: 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default longest wait for a client's request head: from a connection's opening, or from the
/// end of its last answer (so also how long an idle keep-alive connection stays open).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default drain time on SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default time to connect to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for the first byte of a backend's answer.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default api-version for Azure OpenAI data-plane calls when a backend names none.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";
/// Default longest silence between streamed chunks.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default deadline for an answer to start, across all attempts.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Default attempts per request.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default largest request body kept for replay: 4 MiB.
pub const DEFAULT_RETRY_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Default time a request waits for a free slot on a backend at `max_concurrent`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default timeout of one token request to Entra or the managed-identity endpoint.
pub const DEFAULT_IDENTITY_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound on distinct client-credential apps whose tokens are cached.
pub const DEFAULT_MAX_APPS: u64 = 1000;
/// Default bound on WebSockets open through the proxy at once.
pub const DEFAULT_MAX_WEBSOCKETS: usize = 1000;
/// Default longest silence (no frame either way) before a WebSocket is closed.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default longest wait for one call to the limits store in Redis.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Default of `[limits] default_completion_reservation`: tokens reserved for the answer of a
/// chat, completions, responses or realtime request that names no `max_tokens` (or
/// `max_completion_tokens`, `max_output_tokens`).
pub const DEFAULT_COMPLETION_RESERVATION: u64 = 1024;
/// The currency of prices that name none.
pub const DEFAULT_CURRENCY: &str = "USD";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub cloud: Cloud,
    /// When set, every Entra, managed-identity and JWKS request goes to this base URL instead;
    /// always a loopback address.
    pub emulator: Option<Url>,
    pub identity: IdentityConfig,
    pub backends: Vec<Backend>,
    pub models: Vec<Model>,
    pub keys: Vec<KeyEntry>,
    /// Entra and app callers with a name and a policy, matched by their claims.
    pub identities: Vec<IdentityEntry>,
    /// The proxy's app for the on-behalf-of exchange, when configured.
    pub on_behalf_of: Option<OnBehalfOf>,
    /// Serve callers without any credential (only ever implicit on a loopback listener).
    pub allow_unauthenticated: bool,
    pub inbound: InboundConfig,
    /// Where per-key request and token counters live.
    pub limits: LimitsConfig,
    /// `[telemetry]`: read once at start (changing it needs a restart).
    pub telemetry: TelemetryConfig,
    /// The one currency of every `[[models]] price` and money `budget` (`USD` unless the prices
    /// name another).
    pub currency: String,
    /// Things that are allowed but probably wrong, and changes made while normalizing.
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteLevel {
    /// The config was changed on the way in (e.g. a pasted deployment URL was trimmed).
    Normalized,
    /// Allowed, but probably not what was meant.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: NoteLevel,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// Largest request head (request line and headers); more is answered 431.
    pub max_header_bytes: usize,
    /// Longest wait for a whole request head, from the connection's opening or the end of its
    /// last answer; then the connection is closed (slow or silent clients, idle keep-alives).
    pub header_read_timeout: Duration,
    /// Serve `GET /debug/identity` (to loopback clients, or with the admin key).
    pub debug: bool,
    /// Digest of the key that unlocks `/debug/identity` from other addresses.
    pub admin_key: Option<KeyDigest>,
    /// Serving threads, each with its own event loop and upstream connection pool.
    pub workers: std::num::NonZeroUsize,
    /// WebSockets open at once, across workers; more are refused with 503.
    pub max_websockets: usize,
    /// A WebSocket with no frame either way for this long is closed (1001 to the client).
    pub websocket_idle_timeout: Duration,
    /// The proxy's external base URL (scheme, host, port; no path), which links in answers
    /// that point at a backend are rewritten to; `None`: the request's `Host`, over `http`.
    pub public_url: Option<Url>,
    /// The secret `issueToken` tokens are signed with, shared by replicas; `None`: a random
    /// one per process.
    pub issued_token_secret: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub identity_timeout: Duration,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_timeout: Duration,
    /// Deadline for a request's answer to start, across all attempts.
    pub request_timeout: Duration,
    /// Attempts per request (first try included) on 429/5xx/connection errors.
    pub max_attempts: u32,
    /// Request bodies up to this size are kept to be replayed; larger ones are not retried.
    pub retry_buffer_bytes: usize,
    /// Replay a request whose first-byte timeout expired after its body was sent (Azure may
    /// have processed it: off by default).
    pub replay_after_timeout: bool,
}

/// How the proxy itself obtains tokens.
#[derive(Debug, Clone)]
pub enum IdentityConfig {
    /// An ordered chain: workload identity, client secret (from env), managed identity, Azure CLI.
    Auto { client_id: Option<String> },
    /// System-assigned, or user-assigned by client id.
    ManagedIdentity { client_id: Option<String> },
    /// AKS workload identity; unset fields come from `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity {
        client_id: Option<String>,
        tenant_id: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// A service principal with a client secret.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretString,
    },
    /// The signed-in Azure CLI user (local development).
    AzureCli { tenant_id: Option<String> },
}

impl IdentityConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            IdentityConfig::Auto { .. } => "auto",
            IdentityConfig::ManagedIdentity { .. } => "managed-identity",
            IdentityConfig::WorkloadIdentity { .. } => "workload-identity",
            IdentityConfig::ClientSecret { .. } => "client-secret",
            IdentityConfig::AzureCli { .. } => "azure-cli",
        }
    }
}

/// Which API shape a backend's OpenAI-style `/v1/...` requests are translated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ApiShape {
    /// `/openai/deployments/{deployment}/...?api-version=...`
    #[default]
    Deployments,
    /// `/openai/v1/...` with `model` naming the deployment.
    V1,
}

/// An upstream Azure resource.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    /// The resource base URL, without any `/openai/...` path, query or fragment.
    pub endpoint: Url,
    pub api_version: String,
    pub scope: Scope,
    /// `None` for hosts that are not Azure AI hosts (loopback emulator, custom domains).
    pub host_kind: Option<HostKind>,
    pub api: ApiShape,
    /// Deployments known to exist on this backend (from `[[models]]` and `deployments = [...]`).
    pub deployments: Vec<String>,
    /// Most requests in flight to this backend; more wait up to `queue_timeout`, then 503.
    pub max_concurrent: Option<usize>,
    pub queue_timeout: Duration,
    /// What kind of Azure AI service it is.
    pub service: crate::services::Service,
    /// The account's ARM id (Speech, Translator).
    pub resource_id: Option<crate::services::ResourceId>,
    /// The resource's region (Translator).
    pub region: Option<String>,
    /// How the proxy's token goes to it.
    pub presenter: crate::services::Presenter,
}

impl Backend {
    pub fn host(&self) -> &str {
        self.endpoint.host_str().unwrap_or_default()
    }
}

/// An OpenAI-style model name mapped to one or more deployments.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// Never empty. Tried lowest `priority` first, weighted among equals.
    pub targets: Vec<ModelTarget>,
    /// What its tokens cost; `None`: spend-free.
    pub price: Option<Price>,
    /// Tokens reserved for an answer whose request names no ceiling, instead of
    /// `[limits] default_completion_reservation`.
    pub completion_reservation: Option<u64>,
}

/// Money in millionths of the currency unit: counters add integers, so they never drift.
pub type Micros = u64;

/// A model's price per million tokens, in micro-units of [`Config::currency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input_per_1m: Micros,
    /// Prompt tokens Azure reports as cached (`cached_tokens`); the input price unless set.
    pub cached_input_per_1m: Micros,
    pub output_per_1m: Micros,
}

/// One deployment that serves a model.
#[derive(Debug, Clone)]
pub struct ModelTarget {
    /// Index into [`Config::backends`].
    pub backend: usize,
    pub deployment: String,
    pub priority: u32,
    pub weight: u32,
}

impl Model {
    /// The first target (for display and single-target callers).
    pub fn primary(&self) -> Option<&ModelTarget> {
        self.targets.iter().min_by_key(|t| t.priority)
    }
}

/// A client key the proxy accepts.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub name: String,
    pub digest: KeyDigest,
    /// The digest of an old Azure resource key: accepted, swapped, never forwarded.
    pub legacy: bool,
    /// Model names or deployments this key may use; empty means all.
    pub models: Vec<String>,
    /// After this instant the key is refused.
    pub expires: Option<time::OffsetDateTime>,
    /// Requests in any 60 s window.
    pub requests_per_minute: Option<u32>,
    /// Prompt + completion tokens in any 60 s window.
    pub tokens_per_minute: Option<u64>,
    /// Tokens per [`KeyEntry::token_quota_period`].
    pub token_quota: Option<u64>,
    pub token_quota_period: QuotaPeriod,
    /// Money per [`KeyEntry::budget_period`], in micro-units of [`Config::currency`].
    pub budget_micros: Option<Micros>,
    pub budget_period: QuotaPeriod,
}

impl KeyEntry {
    /// The key's label in metrics, logs and `/status`: `key:<name>` or `legacy-key:<name>`.
    pub fn label(&self) -> CallerLabel {
        CallerLabel::key(&self.name, self.legacy)
    }

    /// The request and token budget of this key.
    pub fn budget(&self) -> KeyBudget {
        KeyBudget {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            token_quota: self.token_quota,
            token_quota_period: self.token_quota_period,
            budget_micros: self.budget_micros,
            budget_period: self.budget_period,
        }
    }
}

/// An Entra principal (or a client-credentials app) with a name and a policy: `[[identities]]`.
#[derive(Debug, Clone)]
pub struct IdentityEntry {
    pub name: String,
    /// The claims a token must carry to be this identity; at least one is set.
    pub matcher: IdentityMatch,
    /// Model names or deployments this identity may use; empty means all.
    pub models: Vec<String>,
    /// The identity's own budget, shared by everyone it matches.
    pub budget: KeyBudget,
    /// Each user's (`oid`'s) own budget inside the identity (`per_user_tokens_per_minute`,
    /// `per_user_token_quota` over the identity's `token_quota_period`).
    pub per_user: Option<KeyBudget>,
    /// What reaches Azure for its Entra callers; `None`: `[inbound.entra] upstream`.
    pub upstream: Option<Upstream>,
}

/// What reaches Azure for an Entra caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// By the token's audience: a token for the proxy is swapped for the proxy's own, one
    /// already for the backend's audience is forwarded.
    ByAudience,
    /// The proxy's own token, whatever the caller's was for.
    Proxy,
    /// The caller's token as it is: it must be for the backend's audience.
    Caller,
    /// A token for the signed-in user, exchanged from the caller's (for the proxy) with the
    /// on-behalf-of grant.
    OnBehalfOf,
}

impl Upstream {
    pub fn name(self) -> &'static str {
        match self {
            Upstream::ByAudience => "by audience",
            Upstream::Proxy => "proxy",
            Upstream::Caller => "caller",
            Upstream::OnBehalfOf => "on-behalf-of",
        }
    }
}

/// `[on_behalf_of]`: the proxy's app registration and how it proves it is that app.
#[derive(Debug, Clone)]
pub struct OnBehalfOf {
    pub client_id: String,
    pub tenant_id: String,
    pub proof: AppProof,
    /// Users whose delegated tokens are cached at once; least recently used go first.
    pub max_users: u64,
}

/// How the proxy proves it is its app to Entra in the on-behalf-of exchange.
#[derive(Debug, Clone)]
pub enum AppProof {
    /// A client secret (`client_secret` or `client_secret_file`).
    ClientSecret(SecretString),
    /// A certificate: a signed client assertion.
    Certificate(std::sync::Arc<AppCertificate>),
    /// The proxy's own managed identity, as a federated credential of the app: no secret.
    ManagedIdentity,
    /// The proxy's own workload identity, as a federated credential of the app: no secret.
    WorkloadIdentity,
}

impl OnBehalfOf {
    /// How the proxy proves it is its app, in words (`explain`, traces).
    pub fn describe(&self) -> String {
        format!(
            "app {} (tenant {}) by {}",
            self.client_id,
            self.tenant_id,
            match &self.proof {
                AppProof::ClientSecret(_) => "its client secret".to_string(),
                AppProof::Certificate(c) => {
                    format!("its certificate (x5t#S256 {})", c.x5t_s256())
                }
                AppProof::ManagedIdentity => {
                    "the proxy's managed identity, a federated credential of the app (no secret)"
                        .into()
                }
                AppProof::WorkloadIdentity => {
                    "the proxy's workload identity, a federated credential of the app (no secret)"
                        .into()
                }
            }
        )
    }

    /// Whether `other` describes the same app proved the same way: a reload that leaves
    /// `[on_behalf_of]` alone keeps the users' cached tokens.
    pub fn same_as(&self, other: &OnBehalfOf) -> bool {
        use secrecy::ExposeSecret as _;
        self.client_id == other.client_id
            && self.tenant_id == other.tenant_id
            && self.max_users == other.max_users
            && match (&self.proof, &other.proof) {
                (AppProof::ClientSecret(a), AppProof::ClientSecret(b)) => {
                    a.expose_secret() == b.expose_secret()
                }
                (AppProof::Certificate(a), AppProof::Certificate(b)) => {
                    a.x5t_s256() == b.x5t_s256()
                }
                (AppProof::ManagedIdentity, AppProof::ManagedIdentity)
                | (AppProof::WorkloadIdentity, AppProof::WorkloadIdentity) => true,
                _ => false,
            }
    }
}

impl AppProof {
    /// The `credential = …` it was configured as.
    pub fn name(&self) -> &'static str {
        match self {
            AppProof::ClientSecret(_) => "client-secret",
            AppProof::Certificate(_) => "certificate",
            AppProof::ManagedIdentity => "managed-identity",
            AppProof::WorkloadIdentity => "workload-identity",
        }
    }
}

/// Default of `[on_behalf_of] max_users`.
pub const DEFAULT_OBO_MAX_USERS: u64 = 10_000;

/// What a token must carry to be an identity; every field that is set must hold. Ids are
/// lower-case GUIDs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IdentityMatch {
    /// `azp` / `appid`: a managed identity's or app registration's client id (a
    /// client-credentials caller's client id).
    pub app_id: Option<String>,
    /// `oid`: one user or service principal.
    pub object_id: Option<String>,
    /// A group object id in `groups`.
    pub group: Option<String>,
    /// An app role in `roles`.
    pub role: Option<String>,
    /// `tid`: every caller of a tenant.
    pub tenant: Option<String>,
}

/// A match field's part in an identity's specificity: the most specific identity wins,
/// `object_id` over `app_id` over `role` over `group` over `tenant`.
const SPECIFICITY: [(&str, u8); 5] = [
    ("object_id", 16),
    ("app_id", 8),
    ("role", 4),
    ("group", 2),
    ("tenant", 1),
];

impl IdentityMatch {
    /// The fields that are set, as (name, value), most specific first.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("object_id", &self.object_id),
            ("app_id", &self.app_id),
            ("role", &self.role),
            ("group", &self.group),
            ("tenant", &self.tenant),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_deref()?)))
        .collect()
    }

    /// How specific the match is: a bit per field set, the more specific fields higher, so
    /// that one with `object_id` outranks any without it, and so on down.
    pub fn specificity(&self) -> u8 {
        self.fields()
            .iter()
            .map(|(k, _)| {
                SPECIFICITY
                    .iter()
                    .find(|(name, _)| name == k)
                    .map_or(0, |(_, bit)| *bit)
            })
            .sum()
    }

    /// Whether one token could satisfy both: every single-valued claim (`oid`, `azp`, `tid`)
    /// both name must be the same; lists (`groups`, `roles`) can hold both values.
    pub fn can_overlap(&self, other: &IdentityMatch) -> bool {
        let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        agree(&self.object_id, &other.object_id)
            && agree(&self.app_id, &other.app_id)
            && agree(&self.tenant, &other.tenant)
    }
}

impl IdentityEntry {
    /// The identity's label in metrics, logs and `/status`: `identity:<name>`.
    pub fn label(&self) -> CallerLabel {
        CallerLabel::Identity(std::sync::Arc::from(self.name.as_str()))
    }
}

/// What happens to an Entra or app caller no `[[identities]]` block matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// 403, naming the token's tenant, object and app ids and the block that would admit it.
    Deny,
    /// Served without a policy, labelled by kind (`entra`, `app`).
    Allow,
}

/// What one key may use: requests and tokens per minute, tokens per quota period, money per
/// budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyBudget {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub token_quota: Option<u64>,
    pub token_quota_period: QuotaPeriod,
    /// Money per `budget_period`, in micro-units of [`Config::currency`].
    pub budget_micros: Option<Micros>,
    pub budget_period: QuotaPeriod,
}

impl KeyBudget {
    /// Whether tokens are limited (so answers must carry their usage).
    pub fn limits_tokens(&self) -> bool {
        self.tokens_per_minute.is_some() || self.token_quota.is_some()
    }

    /// Whether money is limited.
    pub fn limits_spend(&self) -> bool {
        self.budget_micros.is_some()
    }

    /// Whether a request must reserve what it may use before it is sent: its tokens or its
    /// money are limited.
    pub fn reserves(&self) -> bool {
        self.limits_tokens() || self.limits_spend()
    }

    /// Whether anything is limited at all.
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some() || self.reserves()
    }
}

/// A calendar period in UTC over which a token quota is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuotaPeriod {
    Hour,
    Day,
    /// Monday 00:00 UTC to the next Monday.
    Week,
    #[default]
    Month,
}

impl QuotaPeriod {
    pub const NAMES: [&'static str; 4] = ["hour", "day", "week", "month"];

    pub fn parse(s: &str) -> Option<QuotaPeriod> {
        match s {
            "hour" => Some(QuotaPeriod::Hour),
            "day" => Some(QuotaPeriod::Day),
            "week" => Some(QuotaPeriod::Week),
            "month" => Some(QuotaPeriod::Month),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuotaPeriod::Hour => "hour",
            QuotaPeriod::Day => "day",
            QuotaPeriod::Week => "week",
            QuotaPeriod::Month => "month",
        }
    }
}

/// `[telemetry]`: traces over OTLP/HTTP. Unset keys fall back to the standard `OTEL_*`
/// variables (`crate::telemetry::trace::Settings::resolve`); with no endpoint anywhere, traces
/// are off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's base OTLP/HTTP URL; `/v1/traces` is appended.
    pub otlp_endpoint: Option<Url>,
    pub service_name: Option<String>,
    /// Fraction of traces started here that are kept (0 to 1); a caller's sampled flag wins.
    pub sample_ratio: Option<f64>,
}

/// `[limits]`: in memory (one replica) unless a Redis URL is set.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub redis: Option<RedisConfig>,
    /// Users of identities with per-user budgets whose counters are kept in this process at
    /// once; the least recently used go first (`[limits] max_users`).
    pub max_users: u64,
    /// Tokens reserved for the answer of a generating request that names no ceiling.
    pub default_completion_reservation: u64,
}

/// Default of `[limits] max_users`.
pub const DEFAULT_MAX_USERS: u64 = 100_000;

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            redis: None,
            max_users: DEFAULT_MAX_USERS,
            default_completion_reservation: DEFAULT_COMPLETION_RESERVATION,
        }
    }
}

/// A Redis server shared by the replicas.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The URL as configured; may carry a password, so it is only ever exposed to connect.
    pub url: SecretString,
    /// The URL without its password, for logs and messages.
    pub shown: String,
    /// Longest wait for one call.
    pub timeout: Duration,
    pub on_error: OnRedisError,
    /// For `rediss://`: the CA file to trust instead of the system's roots (resolved path).
    pub ca_file: Option<std::path::PathBuf>,
}

/// What a request gets when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Counted in this process's memory until Redis is back.
    Allow,
    /// Refused with 503.
    Deny,
}

/// Kinds of client credential the proxy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InboundMode {
    /// Proxy-issued virtual keys and legacy resource keys.
    Key,
    /// Entra ID bearer tokens.
    Entra,
    /// `Authorization: Basic base64(client_id:client_secret)`.
    ClientCredentials,
}

impl InboundMode {
    pub fn name(self) -> &'static str {
        match self {
            InboundMode::Key => "key",
            InboundMode::Entra => "entra",
            InboundMode::ClientCredentials => "client-credentials",
        }
    }
}

/// How callers authenticate.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    pub modes: Vec<InboundMode>,
    pub entra: Option<EntraInbound>,
    pub client_credentials: Option<ClientCredentialsInbound>,
    /// Callers no identity matches: `[inbound.entra] unmatched`, by default `deny` once any
    /// identity is configured and `allow` otherwise.
    pub unmatched: Unmatched,
    /// What reaches Azure for an Entra caller whose identity does not say: `[inbound.entra]
    /// upstream`, by audience when unset.
    pub upstream: Upstream,
}

impl InboundConfig {
    pub fn allows(&self, mode: InboundMode) -> bool {
        self.modes.contains(&mode)
    }
}

/// Entra bearer tokens from callers.
#[derive(Debug, Clone)]
pub struct EntraInbound {
    /// Allowed tenants (issuer tenants).
    pub tenants: Vec<String>,
    /// Audiences of tokens minted for the proxy itself; swapped for the proxy's token.
    pub audiences: Vec<String>,
    /// Forward tokens minted for the backend's audience unchanged.
    pub passthrough: bool,
    /// Fixed JWKS URL instead of OIDC discovery.
    pub jwks_url: Option<Url>,
}

/// Client-credential callers.
#[derive(Debug, Clone)]
pub struct ClientCredentialsInbound {
    pub tenant_id: Option<String>,
    pub allow_tenant_header: bool,
    pub max_apps: u64,
}

/// A config as loaded from disk: the config, every file it was built from (the config file
/// first, then the files it includes) and a digest over their contents.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub files: Vec<PathBuf>,
    /// Hex SHA-256 over `files` as read (see [`include::digest`]).
    pub hash: String,
}

impl Config {
    /// Reads and validates a config file, expanding `${VAR}` from the process environment.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        Config::load_files(path).map(|l| l.config)
    }

    /// [`Config::load`], also telling which files were read (to watch them) and their digest.
    pub fn load_files(path: &std::path::Path) -> Result<Loaded, ConfigError> {
        let text = read_bounded(path).map_err(|reason| ConfigError::Read {
            source_name: path.display().to_string(),
            reason,
        })?;
        let (config, included) = Config::parse_file(path, &text, &read_bounded)?;
        let mut files = vec![SourceFile {
            path: path.to_path_buf(),
            text,
        }];
        files.extend(included);
        let hash = include::digest(
            files
                .iter()
                .map(|f| (f.path.as_path(), Some(f.text.as_bytes()))),
        );
        Ok(Loaded {
            config,
            files: files.into_iter().map(|f| f.path).collect(),
            hash,
        })
    }

    /// The files a load of `path` reads, as they are now, whether the load succeeds or not: the
    /// config and every file it names that resolves (a keys file named before it exists too),
    /// with their digest as [`include::digest_on_disk`] gives it. What a watcher watches after
    /// a refused reload, so that the file that was missing is loaded once it appears.
    pub fn files_named(path: &std::path::Path) -> (Vec<PathBuf>, String) {
        let tried = std::cell::RefCell::new(Vec::<(PathBuf, Option<Vec<u8>>)>::new());
        let read = |p: &std::path::Path| -> Result<String, String> {
            let bytes = include::read_bytes_bounded(p).map_err(|e| e.to_string());
            tried
                .borrow_mut()
                .push((p.to_path_buf(), bytes.as_ref().ok().cloned()));
            String::from_utf8(bytes?).map_err(|_| "is not UTF-8 text".to_string())
        };
        if let Ok(text) = read(path) {
            // Refused or not, the reads it made are what is wanted.
            let _ = Config::parse_file(path, &text, &read);
        }
        let tried = tried.into_inner();
        let hash = include::digest(tried.iter().map(|(p, b)| (p.as_path(), b.as_deref())));
        (tried.into_iter().map(|(p, _)| p).collect(), hash)
    }

    /// `text`, read from `path`: `${VAR}` from the process environment, included files resolved
    /// against `path`'s directory and read by `read`.
    fn parse_file(
        path: &std::path::Path,
        text: &str,
        read: &dyn Fn(&std::path::Path) -> Result<String, String>,
    ) -> Result<(Config, Vec<SourceFile>), ConfigError> {
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let sources = Sources {
            env: &|name| std::env::var(name).ok(),
            base_dir,
            read,
        };
        Config::parse_with(text, &path.display().to_string(), &sources)
    }

    /// Parses and validates config text. `env` resolves `${VAR}`; tests pass a map. Reads no
    /// file: a `[server] keys_file` reads as empty (use [`Config::parse_with`] to supply it).
    pub fn parse(
        text: &str,
        source_name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let sources = Sources {
            env,
            base_dir: std::path::Path::new("."),
            read: &|_| Ok(String::new()),
        };
        Config::parse_with(text, source_name, &sources).map(|(config, _)| config)
    }

    /// Parses and validates config text, reading the files it includes through `sources`;
    /// returns the config and the included files as read.
    pub fn parse_with(
        text: &str,
        source_name: &str,
        sources: &Sources<'_>,
    ) -> Result<(Config, Vec<SourceFile>), ConfigError> {
        let invalid = |problems: Vec<String>| ConfigError::Invalid {
            source_name: source_name.to_string(),
            problems,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| invalid(vec![toml_error(text, &e)]))?;
        let mut errors = Errors::default();
        env::expand_table(&mut table, "", sources.env, &mut errors);
        errors.finish(Some(())).map_err(invalid)?;
        let mut raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| invalid(vec![serde_problem(e)]))?;
        let mut included = Vec::new();
        let mut keys_file = None;
        if let Some(path) = &raw.server.keys_file {
            let path = include::resolve(sources.base_dir, path);
            let (extra, file) =
                include::read_keys_file(&path, sources).map_err(|e| ConfigError::Invalid {
                    source_name: e.file,
                    problems: e.problems,
                })?;
            keys_file = Some(path.display().to_string());
            raw.keys.extend(extra.keys);
            raw.identities.extend(extra.identities);
            included.push(file);
        }
        if let Some(obo) = &mut raw.on_behalf_of {
            included.extend(include::read_obo_files(obo, sources));
        }
        if let Some(ca) = &mut raw.limits.redis_ca_file {
            *ca = include::resolve(sources.base_dir, ca).display().to_string();
        }
        let config = validate::validate(raw).map_err(|problems| match &keys_file {
            Some(file) => blame_keys_file(source_name, file, problems),
            None => invalid(problems),
        })?;
        Ok((config, included))
    }

    /// Every distinct scope the configured backends need.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes: Vec<Scope> = self.backends.iter().map(|b| b.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

/// Problems all in the keys file are reported as that file's (`keys.toml: keys[1].sha256: …`);
/// with problems in both files, the keys file's keep its name in their key.
fn blame_keys_file(source_name: &str, file: &str, problems: Vec<String>) -> ConfigError {
    let prefix = format!("{file}: ");
    if problems.iter().all(|p| p.starts_with(&prefix)) {
        ConfigError::Invalid {
            source_name: file.to_string(),
            problems: problems
                .iter()
                .map(|p| p[prefix.len()..].to_string())
                .collect(),
        }
    } else {
        ConfigError::Invalid {
            source_name: source_name.to_string(),
            problems,
        }
    }
}

/// A typing error as `key.path: message`.
fn serde_problem(e: serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = e.path().to_string();
    let msg = e.into_inner().message().trim().to_string();
    if path == "." || path.is_empty() {
        msg
    } else {
        format!("{path}: {msg}")
    }
}

/// A TOML syntax error as `line L, column C: message`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{DIGEST, err, parse_with_files};

    const MAIN: &str = "[server]\nkeys_file = 'keys/keys.toml'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\ndeployments=['d']\n[[keys]]\nname='main'\nsha256='5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8'\n";
    const KEYS_PATH: &str = "/etc/ep/keys/keys.toml";

    fn keys_err(keys: &str) -> String {
        parse_with_files(MAIN, &[(KEYS_PATH, keys)])
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_files_a_refused_config_names_are_watched_as_they_are() {
        use super::include::digest_on_disk;
        let dir = std::env::temp_dir().join(format!("ep-named-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, MAIN).unwrap();
        let keys = dir.join("keys/keys.toml");
        // The keys file does not exist yet: the load is refused, yet it is named and watched.
        assert!(super::Config::load_files(&config).is_err());
        let (files, seen) = super::Config::files_named(&config);
        assert_eq!(files, [config.clone(), keys.clone()]);
        assert_eq!(seen, digest_on_disk(&files), "nothing changed since");
        std::fs::write(&keys, "[[keys]]\nname='team-b'\nsha256='{}'\n").unwrap();
        assert_ne!(seen, digest_on_disk(&files), "its appearing is a change");
        // Not TOML: only the config itself is named.
        std::fs::write(&config, "[server\n").unwrap();
        assert_eq!(
            super::Config::files_named(&config).0,
            std::slice::from_ref(&config)
        );
        // Gone: still watched, so that it coming back is seen.
        std::fs::remove_file(&config).unwrap();
        let (files, seen) = super::Config::files_named(&config);
        assert_eq!(files, std::slice::from_ref(&config));
        assert_eq!(seen, digest_on_disk(&files));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_from_the_keys_file_join_the_main_ones() {
        let keys = format!(
            "[[keys]]\nname='team-b'\nsha256='{}'\nmodels=['d']\n",
            "ab".repeat(32)
        );
        let (c, files) = parse_with_files(MAIN, &[(KEYS_PATH, &keys)]).unwrap();
        let names: Vec<&str> = c.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["main", "team-b"]);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, std::path::PathBuf::from(KEYS_PATH));
        assert_eq!(files[0].text, keys);
    }

    #[test]
    fn the_keys_file_expands_env_vars() {
        let main = MAIN.replace(
            "[[keys]]\nname='main'",
            "[[keys]]\nname='main'\nlegacy=true",
        );
        let main = main.replace(DIGEST, &"cd".repeat(32));
        let (c, _) = parse_with_files(
            &main,
            &[(KEYS_PATH, "[[keys]]\nname='b'\nsha256='${KEY_DIGEST}'\n")],
        )
        .unwrap();
        assert_eq!(c.keys[1].digest.to_hex(), DIGEST);
        assert_eq!(
            keys_err("[[keys]]\nname='b'\nsha256='${NOPE}'\n"),
            "/etc/ep/keys/keys.toml: keys[0].sha256: environment variable NOPE is not set (referenced as ${NOPE})"
        );
    }

    #[test]
    fn errors_in_the_keys_file_name_the_file_and_the_key() {
        let ok = format!("[[keys]]\nname='b'\nsha256='{}'\n", "ab".repeat(32));
        assert_eq!(
            keys_err(&format!("{ok}[[keys]]\nname='c'\nsha256='12'\n")),
            "/etc/ep/keys/keys.toml: keys[1].sha256: must be 64 hex characters (a SHA-256 digest), got 2 characters; create one with `entra-proxy keys new --name NAME`"
        );
        assert_eq!(
            keys_err(&format!(
                "{ok}[[keys]]\nname='c'\nsha256='{}'\nmodel=['d']\n",
                "ef".repeat(32)
            )),
            "/etc/ep/keys/keys.toml: keys[1].model: unknown field `model`, expected one of `name`, `sha256`, `legacy`, `models`, `expires`, `requests_per_minute`, `tokens_per_minute`, `token_quota`, `token_quota_period`, `budget`, `budget_period`"
        );
        assert!(
            keys_err("[server]\nlisten='x'\n").starts_with(
                "/etc/ep/keys/keys.toml: server: unknown field `server`, expected `keys`"
            ),
            "{}",
            keys_err("[server]\nlisten='x'\n")
        );
        assert!(keys_err("[[keys]\n").starts_with("/etc/ep/keys/keys.toml: line 1"));
        let e = parse_with_files(MAIN, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/ep/keys/keys.toml: cannot read: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_key_name_defined_twice_names_both_places() {
        let e = keys_err(&format!(
            "[[keys]]\nname='main'\nsha256='{}'\n",
            "ab".repeat(32)
        ));
        assert_eq!(
            e,
            "/etc/ep/keys/keys.toml: keys[0].name: duplicate key name \"main\" (also defined at keys[0] of the main config)"
        );
        let e = keys_err(&format!(
            "[[keys]]\nname='b'\nsha256='{}'\n[[keys]]\nname='b'\nsha256='{}'\n",
            "ab".repeat(32),
            "cd".repeat(32)
        ));
        assert_eq!(
            e,
            "/etc/ep/keys/keys.toml: keys[1].name: duplicate key name \"b\" (also defined at /etc/ep/keys/keys.toml: keys[0])"
        );
        let e = err(&format!(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[keys]]\nname='k'\nsha256='{DIGEST}'\n[[keys]]\nname='k'\nsha256='{}'",
            "ab".repeat(32)
        ));
        assert_eq!(
            e,
            "test.toml: keys[1].name: duplicate key name \"k\" (also defined at keys[0] of the main config)"
        );
    }

    #[test]
    fn problems_in_both_files_are_listed_under_the_main_one() {
        let main = MAIN.replace("name='a'", "name='a'\napi_version='latest'");
        let e = parse_with_files(&main, &[(KEYS_PATH, "[[keys]]\nname='b'\nsha256='1'\n")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/ep/config.toml: 2 problems:"), "{e}");
        assert!(
            e.contains("\n  /etc/ep/keys/keys.toml: keys[0].sha256: must be 64 hex"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = err(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'",
        );
        assert!(e.starts_with("test.toml: server"), "{e}");
        assert!(e.contains("unknown field `lisen`"), "{e}");
        let e = err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\nfoo=1");
        assert!(
            e.contains("backends[0]") && e.contains("unknown field `foo`"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("[server]\nlisten = \n");
        assert!(e.starts_with("test.toml: line 2"), "{e}");
    }
}
