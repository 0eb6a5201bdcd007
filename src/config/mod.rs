//! The validated configuration and where it comes from: [`Config::load`] reads a file,
//! [`Config::parse`] takes text (so tests never touch the process environment). Parsing runs in
//! stages, each in its own file: TOML syntax, `${ENV}` expansion (`env`), the raw serde types
//! (`raw`), then validation (`validate`), which reports every problem with its exact key.
//! Defaults are the named constants below.

mod emulator;
mod endpoint;
mod env;
mod errors;
mod key_digest;
mod raw;
mod render;
mod scope;
#[cfg(test)]
mod testing;
mod validate;

pub use emulator::redirect;
pub use endpoint::{NormalizedEndpoint, normalize_endpoint};
pub use errors::ConfigError;
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
/// Default longest wait for one call to the limits store in Redis.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

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
    /// Serve callers without any credential (only ever implicit on a loopback listener).
    pub allow_unauthenticated: bool,
    pub inbound: InboundConfig,
    /// Where per-key request and token counters live.
    pub limits: LimitsConfig,
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
    /// Serve `GET /debug/identity` (to loopback clients, or with the admin key).
    pub debug: bool,
    /// Digest of the key that unlocks `/debug/identity` from other addresses.
    pub admin_key: Option<KeyDigest>,
    /// Serving threads, each with its own event loop and upstream connection pool.
    pub workers: std::num::NonZeroUsize,
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
}

impl KeyEntry {
    /// The request and token budget of this key.
    pub fn budget(&self) -> KeyBudget {
        KeyBudget {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            token_quota: self.token_quota,
            token_quota_period: self.token_quota_period,
        }
    }
}

/// What one key may use: requests and tokens per minute, tokens per quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyBudget {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub token_quota: Option<u64>,
    pub token_quota_period: QuotaPeriod,
}

impl KeyBudget {
    /// Whether tokens are limited (so answers must carry their usage).
    pub fn limits_tokens(&self) -> bool {
        self.tokens_per_minute.is_some() || self.token_quota.is_some()
    }

    /// Whether anything is limited at all.
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some() || self.limits_tokens()
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

/// `[limits]`: in memory (one replica) unless a Redis URL is set.
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    pub redis: Option<RedisConfig>,
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

impl Config {
    /// Reads and validates a config file, expanding `${VAR}` from the process environment.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            source_name: source_name.clone(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &source_name, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text. `env` resolves `${VAR}`; tests pass a map.
    pub fn parse(
        text: &str,
        source_name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems: Vec<String>| ConfigError::Invalid {
            source_name: source_name.to_string(),
            problems,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| invalid(vec![toml_error(text, &e)]))?;
        let mut errors = Errors::default();
        env::expand_table(&mut table, "", env, &mut errors);
        errors.finish(Some(())).map_err(invalid)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = inner.message().trim().to_string();
                if path == "." || path.is_empty() {
                    invalid(vec![msg])
                } else {
                    invalid(vec![format!("{path}: {msg}")])
                }
            })?;
        validate::validate(raw).map_err(invalid)
    }

    /// Every distinct scope the configured backends need.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes: Vec<Scope> = self.backends.iter().map(|b| b.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
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
    use super::testing::err;

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
