//! The typed configuration: TOML parsing, `${ENV}` expansion, validation that names the exact
//! key, and endpoint normalization. Everything is checked here, once, so a bad value stops
//! start-up instead of the first request.

use crate::cloud::{Cloud, HostKind, scope_for_audience};
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub cloud: Cloud,
    /// When set, every Entra and managed-identity request goes to this base URL instead.
    pub emulator: Option<Url>,
    pub identity: IdentityConfig,
    pub backends: Vec<Backend>,
    pub models: Vec<Model>,
    pub keys: Vec<KeyEntry>,
    /// Serve callers without any credential (only ever implicit on a loopback listener).
    pub allow_unauthenticated: bool,
    pub inbound: InboundConfig,
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

/// A token scope such as `https://cognitiveservices.azure.com/.default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The audience a token for this scope carries (the scope without `/.default`).
    pub fn audience(&self) -> &str {
        self.0.strip_suffix("/.default").unwrap_or(&self.0)
    }

    fn parse(raw: &str) -> Result<Scope, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("is empty".into());
        }
        if raw.chars().any(|c| c.is_whitespace()) {
            return Err("must be a single scope without spaces".into());
        }
        let scope = if raw.ends_with("/.default") {
            raw.to_string()
        } else {
            scope_for_audience(raw)
        };
        Url::parse(&scope).map_err(|_| {
            format!("{raw:?} is not a URL such as https://cognitiveservices.azure.com/.default")
        })?;
        Ok(Scope(scope))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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

/// A SHA-256 digest of a client key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        use sha2::Digest as _;
        KeyDigest(sha2::Sha256::digest(key.as_bytes()).into())
    }

    fn parse(hex_digest: &str) -> Result<KeyDigest, String> {
        let s = hex_digest.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "must be 64 hex characters (a SHA-256 digest), got {} characters; create one with `entra-proxy keys new --name NAME`",
                s.len()
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(KeyDigest(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but there is no reason to print it whole either.
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
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
    /// Token-bucket rate limit.
    pub requests_per_minute: Option<u32>,
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

/// Default bound on distinct client-credential apps whose tokens are cached.
pub const DEFAULT_MAX_APPS: u64 = 1000;

/// A configuration problem, naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: cannot read: {reason}")]
    Read { source_name: String, reason: String },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

// ---- raw, as written in the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    azure: RawAzure,
    identity: Option<RawIdentity>,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    inbound: RawInbound,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    allow_unauthenticated: Option<bool>,
    modes: Option<Vec<InboundMode>>,
    entra: Option<RawEntraInbound>,
    client_credentials: Option<RawClientCredentials>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntraInbound {
    tenants: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    passthrough: Option<bool>,
    jwks_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientCredentials {
    tenant_id: Option<String>,
    #[serde(default)]
    allow_tenant_header: bool,
    max_apps: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    max_header_bytes: Option<usize>,
    #[serde(default)]
    debug: bool,
    admin_key_sha256: Option<String>,
    workers: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    connect_timeout_secs: Option<f64>,
    first_byte_timeout_secs: Option<f64>,
    identity_timeout_secs: Option<f64>,
    idle_timeout_secs: Option<f64>,
    request_timeout_secs: Option<f64>,
    max_attempts: Option<u32>,
    retry_buffer_bytes: Option<usize>,
    #[serde(default)]
    replay_after_timeout: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAzure {
    #[serde(default)]
    cloud: Cloud,
    emulator: Option<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawIdentityKind {
    Auto,
    ManagedIdentity,
    WorkloadIdentity,
    ClientSecret,
    AzureCli,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    kind: RawIdentityKind,
    client_id: Option<String>,
    tenant_id: Option<String>,
    client_secret: Option<SecretString>,
    federated_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: String,
    endpoint: String,
    api_version: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    api: ApiShape,
    #[serde(default)]
    deployments: Vec<String>,
    max_concurrent: Option<usize>,
    queue_timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    backend: Option<String>,
    deployment: Option<String>,
    targets: Option<Vec<RawTarget>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    backend: String,
    deployment: String,
    #[serde(default)]
    priority: u32,
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    sha256: String,
    #[serde(default)]
    legacy: bool,
    #[serde(default)]
    models: Vec<String>,
    expires: Option<String>,
    requests_per_minute: Option<u32>,
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
        let invalid = |message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| invalid(toml_error(text, &e)))?;
        expand_table(&mut table, "", env).map_err(invalid)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = inner.message().trim().to_string();
                if path == "." || path.is_empty() {
                    invalid(msg)
                } else {
                    invalid(format!("{path}: {msg}"))
                }
            })?;
        validate(raw).map_err(invalid)
    }

    /// Where a request for an Entra or managed-identity URL actually goes: the URL itself, or,
    /// with `[azure] emulator`, the same path and query on the emulator.
    pub fn identity_url(&self, url: &Url) -> Url {
        redirect(url, self.emulator.as_ref())
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// Every distinct scope the configured backends need.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes: Vec<Scope> = self.backends.iter().map(|b| b.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

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

/// Expands `${VAR}` in every string value; `$${` is a literal `${`.
fn expand_table(
    table: &mut toml::Table,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    for (key, value) in table.iter_mut() {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        expand_value(value, &here, env)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) => {
            *s = expand_str(s, env).map_err(|e| format!("{path}: {e}"))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env)?;
            }
        }
        toml::Value::Table(t) => expand_table(t, path, env)?,
        _ => {}
    }
    Ok(())
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| "unterminated ${ (write $${ for a literal ${)".to_string())?;
            let name = &inner[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            let val = env(name).ok_or_else(|| {
                format!("environment variable {name} is not set (referenced as ${{{name}}})")
            })?;
            out.push_str(&val);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(raw: RawConfig) -> Result<Config, String> {
    let mut notes = Vec::new();
    let server = validate_server(raw.server)?;
    let upstream = validate_upstream(raw.upstream)?;
    let cloud = raw.azure.cloud;
    let emulator = match raw.azure.emulator {
        None => None,
        Some(e) => Some(parse_emulator(&e).map_err(|m| format!("azure.emulator: {m}"))?),
    };
    let identity = validate_identity(raw.identity)?;

    if raw.backends.is_empty() {
        return Err("backends: at least one [[backends]] entry is required".into());
    }
    let mut backends = Vec::with_capacity(raw.backends.len());
    let mut names = HashSet::new();
    for (i, b) in raw.backends.into_iter().enumerate() {
        let at = format!("backends[{i}]");
        if b.name.trim().is_empty() {
            return Err(format!("{at}.name: is empty"));
        }
        if !names.insert(b.name.clone()) {
            return Err(format!("{at}.name: duplicate backend name {:?}", b.name));
        }
        backends.push(validate_backend(b, &at, cloud, &mut notes)?);
    }

    let mut models = Vec::with_capacity(raw.models.len());
    let mut model_names = HashSet::new();
    for (i, m) in raw.models.into_iter().enumerate() {
        let at = format!("models[{i}]");
        if m.name.trim().is_empty() {
            return Err(format!("{at}.name: is empty"));
        }
        if !model_names.insert(m.name.clone()) {
            return Err(format!("{at}.name: duplicate model name {:?}", m.name));
        }
        let raw_targets: Vec<(String, RawTarget)> = match (m.targets, m.backend, m.deployment) {
            (Some(targets), None, None) => {
                if targets.is_empty() {
                    return Err(format!(
                        "{at}.targets: list at least one {{ backend, deployment }}"
                    ));
                }
                targets
                    .into_iter()
                    .enumerate()
                    .map(|(j, t)| (format!("{at}.targets[{j}]"), t))
                    .collect()
            }
            (None, Some(backend), Some(deployment)) => vec![(
                at.clone(),
                RawTarget {
                    backend,
                    deployment,
                    priority: 0,
                    weight: None,
                },
            )],
            (Some(_), _, _) => {
                return Err(format!(
                    "{at}: use either targets = [...] or backend + deployment, not both"
                ));
            }
            (None, None, _) => {
                return Err(format!("{at}.backend: missing (or use targets = [...])"));
            }
            (None, Some(_), None) => return Err(format!("{at}.deployment: missing")),
        };
        let mut targets = Vec::with_capacity(raw_targets.len());
        for (tat, t) in raw_targets {
            let backend = backends
                .iter()
                .position(|b| b.name == t.backend)
                .ok_or_else(|| {
                    let known: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
                    format!(
                        "{tat}.backend: no backend named {:?} (backends: {})",
                        t.backend,
                        known.join(", ")
                    )
                })?;
            validate_deployment(&t.deployment).map_err(|e| format!("{tat}.deployment: {e}"))?;
            let weight = t.weight.unwrap_or(1);
            if weight == 0 {
                return Err(format!(
                    "{tat}.weight: must be at least 1 (remove the target to disable it)"
                ));
            }
            if let Some(b) = backends.get_mut(backend)
                && !b.deployments.contains(&t.deployment)
            {
                b.deployments.push(t.deployment.clone());
            }
            targets.push(ModelTarget {
                backend,
                deployment: t.deployment,
                priority: t.priority,
                weight,
            });
        }
        models.push(Model {
            name: m.name,
            targets,
        });
    }

    let mut keys = Vec::with_capacity(raw.keys.len());
    let mut digests = HashSet::new();
    let mut key_names = HashSet::new();
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = format!("keys[{i}]");
        if k.name.trim().is_empty() {
            return Err(format!("{at}.name: is empty"));
        }
        if !key_names.insert(k.name.clone()) {
            return Err(format!("{at}.name: duplicate key name {:?}", k.name));
        }
        let digest = KeyDigest::parse(&k.sha256).map_err(|e| format!("{at}.sha256: {e}"))?;
        if !digests.insert(digest) {
            return Err(format!(
                "{at}.sha256: the same digest is already used by another key"
            ));
        }
        let expires = match &k.expires {
            None => None,
            Some(e) => Some(
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        format!("{at}.expires: {e:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z")
                    })?,
            ),
        };
        if k.requests_per_minute == Some(0) {
            return Err(format!(
                "{at}.requests_per_minute: must be at least 1 (remove the key to block it)"
            ));
        }
        for (j, m) in k.models.iter().enumerate() {
            let known = models
                .iter()
                .any(|x| x.name == *m || x.targets.iter().any(|t| t.deployment == *m))
                || backends.iter().any(|b| b.deployments.contains(m));
            if !known {
                let names: Vec<&str> = models.iter().map(|x| x.name.as_str()).collect();
                return Err(format!(
                    "{at}.models[{j}]: {m:?} is not a configured model or deployment (models: {})",
                    names.join(", ")
                ));
            }
        }
        keys.push(KeyEntry {
            name: k.name,
            digest,
            legacy: k.legacy,
            models: k.models,
            expires,
            requests_per_minute: k.requests_per_minute,
        });
    }

    let RawInbound {
        allow_unauthenticated,
        modes,
        entra,
        client_credentials,
    } = raw.inbound;
    let inbound = validate_inbound(RawInboundParts {
        modes,
        entra,
        client_credentials,
    })?;
    let no_client_auth =
        keys.is_empty() && inbound.entra.is_none() && inbound.client_credentials.is_none();
    let allow_unauthenticated = match allow_unauthenticated {
        Some(v) => v,
        None if !no_client_auth => false,
        None if server.listen.ip().is_loopback() => {
            notes.push(Note {
                level: NoteLevel::Warning,
                message: format!(
                    "keys: no [[keys]] configured; serving without client authentication because server.listen ({}) is loopback (sidecar mode)",
                    server.listen
                ),
            });
            true
        }
        None => {
            return Err(format!(
                "keys: no [[keys]] (and no [inbound.entra] or [inbound.client_credentials]) configured and server.listen ({}) is not loopback, so anyone who can reach the proxy would use its identity; add a key (`entra-proxy keys new --name NAME`) or set [inbound] allow_unauthenticated = true",
                server.listen
            ));
        }
    };

    Ok(Config {
        server,
        upstream,
        cloud,
        emulator,
        identity,
        backends,
        models,
        keys,
        allow_unauthenticated,
        inbound,
        notes,
    })
}

struct RawInboundParts {
    modes: Option<Vec<InboundMode>>,
    entra: Option<RawEntraInbound>,
    client_credentials: Option<RawClientCredentials>,
}

fn validate_tenant(key: &str, t: &str) -> Result<String, String> {
    let t = t.trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "{key}: {t:?} is not a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47, or a domain)"
        ));
    }
    Ok(t.to_ascii_lowercase())
}

fn validate_inbound(raw: RawInboundParts) -> Result<InboundConfig, String> {
    let entra = match raw.entra {
        None => None,
        Some(e) => {
            if e.tenants.is_empty() {
                return Err("inbound.entra.tenants: list at least one allowed tenant id".into());
            }
            let tenants = e
                .tenants
                .iter()
                .enumerate()
                .map(|(i, t)| validate_tenant(&format!("inbound.entra.tenants[{i}]"), t))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, a) in e.audiences.iter().enumerate() {
                if a.trim().is_empty() {
                    return Err(format!("inbound.entra.audiences[{i}]: is empty"));
                }
            }
            let jwks_url = match &e.jwks_url {
                None => None,
                Some(u) => Some(
                    Url::parse(u)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| {
                            format!("inbound.entra.jwks_url: {u:?} is not an http(s) URL")
                        })?,
                ),
            };
            Some(EntraInbound {
                tenants,
                audiences: e.audiences.iter().map(|a| a.trim().to_string()).collect(),
                passthrough: e.passthrough.unwrap_or(true),
                jwks_url,
            })
        }
    };
    let client_credentials = match raw.client_credentials {
        None => None,
        Some(c) => {
            let tenant_id = match &c.tenant_id {
                Some(t) => Some(validate_tenant("inbound.client_credentials.tenant_id", t)?),
                None => None,
            };
            if tenant_id.is_none() && !c.allow_tenant_header {
                return Err("inbound.client_credentials: set tenant_id, or allow_tenant_header = true so callers name their tenant in x-ms-tenant-id".into());
            }
            let max_apps = c.max_apps.unwrap_or(DEFAULT_MAX_APPS);
            if max_apps == 0 {
                return Err("inbound.client_credentials.max_apps: must be at least 1".into());
            }
            Some(ClientCredentialsInbound {
                tenant_id,
                allow_tenant_header: c.allow_tenant_header,
                max_apps,
            })
        }
    };
    let modes = match raw.modes {
        Some(modes) => {
            if modes.is_empty() {
                return Err("inbound.modes: list at least one of \"key\", \"entra\", \"client-credentials\"".into());
            }
            if modes.contains(&InboundMode::Entra) && entra.is_none() {
                return Err("inbound.modes: \"entra\" is listed but [inbound.entra] is missing (it names the allowed tenants)".into());
            }
            if modes.contains(&InboundMode::ClientCredentials) && client_credentials.is_none() {
                return Err("inbound.modes: \"client-credentials\" is listed but [inbound.client_credentials] is missing".into());
            }
            modes
        }
        None => {
            let mut m = vec![InboundMode::Key];
            if entra.is_some() {
                m.push(InboundMode::Entra);
            }
            if client_credentials.is_some() {
                m.push(InboundMode::ClientCredentials);
            }
            m
        }
    };
    Ok(InboundConfig {
        modes,
        entra,
        client_credentials,
    })
}

fn validate_server(raw: RawServer) -> Result<ServerConfig, String> {
    let listen_raw = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_raw.parse().map_err(|_| {
        format!(
            "server.listen: {listen_raw:?} is not an address such as 127.0.0.1:8080 or 0.0.0.0:8080"
        )
    })?;
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err("server.max_body_bytes: must be greater than 0".into());
    }
    Ok(ServerConfig {
        listen,
        max_body_bytes,
        shutdown_grace: raw
            .shutdown_grace_secs
            .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs),
        max_header_bytes: match raw.max_header_bytes {
            None => DEFAULT_MAX_HEADER_BYTES,
            Some(n) if (8192..=16 * 1024 * 1024).contains(&n) => n,
            Some(n) => {
                return Err(format!(
                    "server.max_header_bytes: {n} is not between 8192 and 16777216"
                ));
            }
        },
        debug: raw.debug,
        admin_key: match &raw.admin_key_sha256 {
            None => None,
            Some(d) => {
                Some(KeyDigest::parse(d).map_err(|e| format!("server.admin_key_sha256: {e}"))?)
            }
        },
        workers: match raw.workers {
            None => default_workers(),
            Some(n) => std::num::NonZeroUsize::new(n)
                .filter(|n| n.get() <= MAX_WORKERS)
                .ok_or_else(|| format!("server.workers: {n} is not between 1 and {MAX_WORKERS}"))?,
        },
    })
}

/// Upper bound of `server.workers`: far above any sensible core count, low enough to catch a
/// typo before it starts thousands of threads.
const MAX_WORKERS: usize = 1024;

/// One worker per CPU the process may use (honours CPU affinity and cgroup quotas).
fn default_workers() -> std::num::NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
}

fn seconds(key: &str, v: Option<f64>, default: Duration) -> Result<Duration, String> {
    match v {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(format!(
            "{key}: {s} is not a number of seconds between 0 and 86400"
        )),
    }
}

fn validate_upstream(raw: RawUpstream) -> Result<UpstreamConfig, String> {
    Ok(UpstreamConfig {
        connect_timeout: seconds(
            "upstream.connect_timeout_secs",
            raw.connect_timeout_secs,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        first_byte_timeout: seconds(
            "upstream.first_byte_timeout_secs",
            raw.first_byte_timeout_secs,
            DEFAULT_FIRST_BYTE_TIMEOUT,
        )?,
        identity_timeout: seconds(
            "upstream.identity_timeout_secs",
            raw.identity_timeout_secs,
            DEFAULT_IDENTITY_TIMEOUT,
        )?,
        idle_timeout: seconds(
            "upstream.idle_timeout_secs",
            raw.idle_timeout_secs,
            DEFAULT_IDLE_TIMEOUT,
        )?,
        request_timeout: seconds(
            "upstream.request_timeout_secs",
            raw.request_timeout_secs,
            DEFAULT_REQUEST_TIMEOUT,
        )?,
        max_attempts: match raw.max_attempts {
            None => DEFAULT_MAX_ATTEMPTS,
            Some(n @ 1..=10) => n,
            Some(n) => {
                return Err(format!(
                    "upstream.max_attempts: {n} is not between 1 (no retries) and 10"
                ));
            }
        },
        retry_buffer_bytes: raw.retry_buffer_bytes.unwrap_or(DEFAULT_RETRY_BUFFER_BYTES),
        replay_after_timeout: raw.replay_after_timeout,
    })
}

fn parse_emulator(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(url)
}

fn non_empty(key: &str, v: Option<String>) -> Result<Option<String>, String> {
    match v {
        Some(s) if s.trim().is_empty() => Err(format!("{key}: is empty")),
        other => Ok(other.map(|s| s.trim().to_string())),
    }
}

fn validate_identity(raw: Option<RawIdentity>) -> Result<IdentityConfig, String> {
    let Some(raw) = raw else {
        return Ok(IdentityConfig::Auto { client_id: None });
    };
    let client_id = non_empty("identity.client_id", raw.client_id)?;
    let tenant_id = non_empty("identity.tenant_id", raw.tenant_id)?;
    let kind = raw.kind;
    let unused = |field: &str, present: bool| -> Result<(), String> {
        if present {
            Err(format!(
                "identity.{field}: not used by kind = \"{}\"; remove it",
                kind_name(kind)
            ))
        } else {
            Ok(())
        }
    };
    if kind != RawIdentityKind::ClientSecret {
        unused("client_secret", raw.client_secret.is_some())?;
    }
    if kind != RawIdentityKind::WorkloadIdentity {
        unused("federated_token_file", raw.federated_token_file.is_some())?;
    }
    Ok(match kind {
        RawIdentityKind::Auto => {
            unused("tenant_id", tenant_id.is_some())?;
            IdentityConfig::Auto { client_id }
        }
        RawIdentityKind::ManagedIdentity => {
            unused("tenant_id", tenant_id.is_some())?;
            IdentityConfig::ManagedIdentity { client_id }
        }
        RawIdentityKind::WorkloadIdentity => IdentityConfig::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file: raw.federated_token_file,
        },
        RawIdentityKind::ClientSecret => {
            use secrecy::ExposeSecret as _;
            let need = |k: &str| format!("identity.{k}: required for kind = \"client-secret\"");
            let secret = raw.client_secret.ok_or_else(|| need("client_secret"))?;
            if secret.expose_secret().trim().is_empty() {
                return Err("identity.client_secret: is empty".into());
            }
            IdentityConfig::ClientSecret {
                tenant_id: tenant_id.ok_or_else(|| need("tenant_id"))?,
                client_id: client_id.ok_or_else(|| need("client_id"))?,
                secret,
            }
        }
        RawIdentityKind::AzureCli => {
            unused("client_id", client_id.is_some())?;
            IdentityConfig::AzureCli { tenant_id }
        }
    })
}

fn kind_name(kind: RawIdentityKind) -> &'static str {
    match kind {
        RawIdentityKind::Auto => "auto",
        RawIdentityKind::ManagedIdentity => "managed-identity",
        RawIdentityKind::WorkloadIdentity => "workload-identity",
        RawIdentityKind::ClientSecret => "client-secret",
        RawIdentityKind::AzureCli => "azure-cli",
    }
}

fn validate_deployment(d: &str) -> Result<(), String> {
    if d.trim().is_empty() {
        return Err("is empty".into());
    }
    if let Some(rest) = d.strip_prefix("azure/") {
        return Err(format!(
            "{d:?} starts with \"azure/\", which is LiteLLM's provider prefix, not part of an Azure deployment name; use {rest:?}"
        ));
    }
    if d.contains('/') || d.contains('?') || d.contains('#') {
        return Err(format!(
            "{d:?} is not a deployment name (Azure deployment names cannot contain '/', '?' or '#')"
        ));
    }
    Ok(())
}

fn validate_api_version(v: &str) -> Result<(), String> {
    let bytes = v.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let suffix_ok = matches!(&v[v.len().min(10)..], "" | "-preview");
    if date_ok && suffix_ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not an Azure api-version such as 2024-10-21 or 2025-01-01-preview"
        ))
    }
}

/// Keeps a URL's path and query but sends it to `target`'s scheme, host, port (and base path).
pub fn redirect(url: &Url, target: Option<&Url>) -> Url {
    let Some(target) = target else {
        return url.clone();
    };
    let mut out = target.clone();
    let base = target.path().trim_end_matches('/');
    out.set_path(&format!("{base}{}", url.path()));
    out.set_query(url.query());
    out
}

/// What was changed while normalizing an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedEndpoint {
    pub base: Url,
    pub api_version_from_url: Option<String>,
    pub deployment_from_url: Option<String>,
    /// Whether anything was removed.
    pub changed: bool,
}

/// Reduces a pasted URL to the resource base: drops `/openai/...`, the query and trailing `/`,
/// keeping the `api-version` and deployment it named. This is the classic LiteLLM 404 trap:
/// a full deployment URL used where the resource endpoint belongs.
pub fn normalize_endpoint(raw: &str) -> Result<NormalizedEndpoint, String> {
    let trimmed = raw.trim();
    let url = Url::parse(trimmed).map_err(|e| {
        format!("{trimmed:?} is not a URL ({e}); expected e.g. https://myres.openai.azure.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{trimmed:?} must start with https:// (or http:// for a local emulator)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{trimmed:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not contain a user name or password; credentials never go in the endpoint URL"
                .into(),
        );
    }
    let mut api_version = None;
    for (k, v) in url.query_pairs() {
        if k == "api-version" {
            api_version = Some(v.into_owned());
        }
    }
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let openai_at = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("openai"));
    let deployment = openai_at.and_then(|i| match (segments.get(i + 1), segments.get(i + 2)) {
        (Some(d), Some(name)) if d == "deployments" => Some(name.clone()),
        _ => None,
    });
    let keep: &[String] = match openai_at {
        Some(i) => &segments[..i],
        None => &segments,
    };
    let mut base = url.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.set_path("");
    if !keep.is_empty()
        && let Ok(mut segs) = base.path_segments_mut()
    {
        segs.extend(keep.iter().map(|s| percent_decode(s)));
    }
    let changed = base.as_str().trim_end_matches('/') != trimmed.trim_end_matches('/');
    Ok(NormalizedEndpoint {
        base,
        api_version_from_url: api_version,
        deployment_from_url: deployment,
        changed,
    })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn validate_backend(
    b: RawBackend,
    at: &str,
    cloud: Cloud,
    notes: &mut Vec<Note>,
) -> Result<Backend, String> {
    let norm = normalize_endpoint(&b.endpoint).map_err(|e| format!("{at}.endpoint: {e}"))?;
    let host = norm.base.host_str().unwrap_or_default().to_string();

    let mut api_version = b.api_version.clone();
    if norm.changed {
        let mut what = vec![format!(
            "{at}.endpoint: using the resource base {} instead of the pasted URL (clients add /openai/... themselves; a full deployment URL as endpoint is the classic 404 trap)",
            norm.base.as_str().trim_end_matches('/')
        )];
        if let Some(v) = &norm.api_version_from_url {
            match &b.api_version {
                None => {
                    what.push(format!("api_version {v} taken from the URL"));
                    api_version = Some(v.clone());
                }
                Some(explicit) if explicit != v => what.push(format!(
                    "the URL's api-version {v} is ignored because api_version = {explicit:?} is set"
                )),
                Some(_) => {}
            }
        }
        if let Some(d) = &norm.deployment_from_url {
            what.push(format!("deployment {d:?} noted as known on this backend"));
        }
        notes.push(Note {
            level: NoteLevel::Normalized,
            message: what.join("; "),
        });
    }
    let api_version = api_version.unwrap_or_else(|| DEFAULT_API_VERSION.to_string());
    validate_api_version(&api_version).map_err(|e| format!("{at}.api_version: {e}"))?;

    let host_kind = match Cloud::of_host(&host) {
        Some((host_cloud, _)) if host_cloud != cloud => {
            return Err(format!(
                "{at}.endpoint: host {host} belongs to the {host_cloud} cloud, but azure.cloud is \"{cloud}\"; set [azure] cloud = \"{host_cloud}\" or use a {cloud} endpoint"
            ));
        }
        Some((_, kind)) => Some(kind),
        None => None,
    };
    if host_kind == Some(HostKind::Regional) {
        notes.push(Note {
            level: NoteLevel::Warning,
            message: format!(
                "{at}.endpoint: {host} is a shared regional endpoint, which accepts only keys; Entra tokens work only on a resource's custom subdomain (https://<resource>.openai.azure.com or https://<resource>.cognitiveservices.azure.com)"
            ),
        });
    }
    let scope = match &b.scope {
        Some(s) => Scope::parse(s).map_err(|e| format!("{at}.scope: {e}"))?,
        None => match host_kind {
            Some(kind) => Scope(scope_for_audience(cloud.audience_for(kind))),
            None => {
                let is_loopback = norm.base.host().is_some_and(|h| match h {
                    url::Host::Domain(d) => d == "localhost",
                    url::Host::Ipv4(ip) => ip.is_loopback(),
                    url::Host::Ipv6(ip) => ip.is_loopback(),
                });
                if !is_loopback {
                    notes.push(Note {
                        level: NoteLevel::Warning,
                        message: format!(
                            "{at}.endpoint: {host} is not an Azure AI host name; using scope {} (set scope = \"...\" on this backend if it needs another audience)",
                            scope_for_audience(cloud.cognitive_audience())
                        ),
                    });
                }
                Scope(scope_for_audience(cloud.cognitive_audience()))
            }
        },
    };
    let mut deployments = Vec::new();
    for (i, d) in b.deployments.iter().enumerate() {
        validate_deployment(d).map_err(|e| format!("{at}.deployments[{i}]: {e}"))?;
        deployments.push(d.clone());
    }
    if let Some(d) = norm.deployment_from_url
        && validate_deployment(&d).is_ok()
        && !deployments.contains(&d)
    {
        deployments.push(d);
    }
    if b.max_concurrent == Some(0) {
        return Err(format!("{at}.max_concurrent: must be at least 1"));
    }
    Ok(Backend {
        name: b.name,
        endpoint: norm.base,
        api_version,
        scope,
        host_kind,
        api: b.api,
        deployments,
        max_concurrent: b.max_concurrent,
        queue_timeout: seconds(
            &format!("{at}.queue_timeout_secs"),
            b.queue_timeout_secs,
            DEFAULT_QUEUE_TIMEOUT,
        )?,
    })
}

/// Renders the config as it will be used, with secrets masked (for `config check`).
pub fn render_normalized(config: &Config) -> String {
    let mut out = BTreeMap::new();
    out.insert("server.listen", config.server.listen.to_string());
    out.insert("azure.cloud", config.cloud.to_string());
    if let Some(e) = &config.emulator {
        out.insert("azure.emulator", e.to_string());
    }
    out.insert("identity.kind", config.identity.kind_name().to_string());
    let mut s: String = out
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    if let IdentityConfig::ClientSecret {
        tenant_id,
        client_id,
        ..
    } = &config.identity
    {
        s.push_str(&format!(
            "identity.tenant_id = {tenant_id}\nidentity.client_id = {client_id}\nidentity.client_secret = ****\n"
        ));
    }
    for b in &config.backends {
        s.push_str(&format!(
            "backend {}: endpoint {} api_version {} scope {} api {:?} deployments [{}]\n",
            b.name,
            b.endpoint.as_str().trim_end_matches('/'),
            b.api_version,
            b.scope,
            b.api,
            b.deployments.join(", ")
        ));
    }
    for m in &config.models {
        let targets: Vec<String> = m
            .targets
            .iter()
            .map(|t| {
                let backend = config
                    .backends
                    .get(t.backend)
                    .map_or("?", |b| b.name.as_str());
                format!(
                    "{backend}/{} (priority {}, weight {})",
                    t.deployment, t.priority, t.weight
                )
            })
            .collect();
        s.push_str(&format!("model {} -> {}\n", m.name, targets.join(", ")));
    }
    for k in &config.keys {
        s.push_str(&format!(
            "key {}{} sha256 {}…\n",
            k.name,
            if k.legacy {
                " (legacy resource key)"
            } else {
                ""
            },
            &k.digest.to_hex()[..8]
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &|name| match name {
            "AZURE_CLIENT_SECRET" => Some("s3cret".into()),
            "RES" => Some("myres".into()),
            _ => None,
        })
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const ISSUE_SHAPE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[azure]                         # optional
cloud = "public"                # public | usgov | china -> authority + token scope
# emulator = "http://127.0.0.1:9999"   # send every Entra / IMDS call here (tests, demo)

[identity]                      # how the proxy itself gets tokens
kind = "managed-identity"       # auto | managed-identity | workload-identity | client-secret | azure-cli
# client_id = "…"               # user-assigned identity or service principal
# tenant_id = "…"  client_secret = "${AZURE_CLIENT_SECRET}"

[[backends]]
name = "primary"
endpoint = "https://myres.openai.azure.com"
api_version = "2024-10-21"

[[models]]                      # OpenAI-style model name -> Azure deployment
name = "gpt-4o"
backend = "primary"
deployment = "gpt-4o-2024-08-06"

[[keys]]                        # virtual keys, stored as SHA-256 hex digests
name = "team-a"
sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
"#;

    #[test]
    fn accepts_the_documented_shape() {
        let c = parse(ISSUE_SHAPE).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://cognitiveservices.azure.com/.default"
        );
        assert_eq!(c.backends[0].host_kind, Some(HostKind::OpenAi));
        assert_eq!(c.models[0].targets[0].deployment, "gpt-4o-2024-08-06");
        assert_eq!(c.keys[0].digest.to_hex(), DIGEST);
        assert!(c.notes.is_empty());
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

    #[test]
    fn env_vars_are_expanded_and_missing_ones_named() {
        let c = parse("[identity]\nkind='client-secret'\ntenant_id='t'\nclient_id='c'\nclient_secret='${AZURE_CLIENT_SECRET}'\n[[backends]]\nname='a'\nendpoint='https://${RES}.openai.azure.com'").unwrap();
        assert_eq!(c.backends[0].host(), "myres.openai.azure.com");
        let IdentityConfig::ClientSecret { secret, .. } = &c.identity else {
            panic!("wrong kind")
        };
        use secrecy::ExposeSecret as _;
        assert_eq!(secret.expose_secret(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = err("[[backends]]\nname='a'\nendpoint='https://${NOPE}.openai.azure.com'");
        assert_eq!(
            e,
            "test.toml: backends[0].endpoint: environment variable NOPE is not set (referenced as ${NOPE})"
        );
        assert_eq!(expand_str("a$${b}c$d", &|_| None).unwrap(), "a${b}c$d");
    }

    #[test]
    fn pasted_deployment_url_is_normalized_keeping_api_version() {
        let c = parse("[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com/openai/deployments/gpt-4.1/chat/completions?api-version=2025-01-01-preview'").unwrap();
        let b = &c.backends[0];
        assert_eq!(b.endpoint.as_str(), "https://res.openai.azure.com/");
        assert_eq!(b.api_version, "2025-01-01-preview");
        assert_eq!(b.deployments, vec!["gpt-4.1".to_string()]);
        let normalized: Vec<_> = c
            .notes
            .iter()
            .filter(|n| n.level == NoteLevel::Normalized)
            .collect();
        assert_eq!(normalized.len(), 1);
        assert!(normalized[0].message.contains("gpt-4.1"));
        assert!(normalized[0].message.contains("2025-01-01-preview"));
        let n = normalize_endpoint("https://res.openai.azure.com/").unwrap();
        assert!(!n.changed);
        let n = normalize_endpoint("https://res.openai.azure.com/openai/v1/").unwrap();
        assert!(n.changed);
        assert_eq!(n.base.as_str(), "https://res.openai.azure.com/");
        assert!(normalize_endpoint("https://u:p@res.openai.azure.com").is_err());
        assert!(normalize_endpoint("ftp://res").is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(
            err("[[backends]]\nname='a'\nendpoint='nope'")
                .contains("backends[0].endpoint: \"nope\" is not a URL")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='b'\ndeployment='d'")
                .contains("models[0].backend: no backend named \"b\" (backends: a)")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[keys]]\nname='k'\nsha256='abc'")
                .contains("keys[0].sha256: must be 64 hex characters")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\n[[models]]\nname='m'\nbackend='a'\ndeployment='azure/gpt-4o'")
                .contains("LiteLLM's provider prefix")
        );
        assert!(
            err("[server]\nlisten='nope'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'")
                .contains("server.listen")
        );
        assert!(
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\napi_version='latest'")
                .contains("backends[0].api_version")
        );
        assert!(err("[identity]\nkind='client-secret'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'").contains("identity.client_secret: required"));
        assert!(
            err("[identity]\nkind='magic'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'")
                .contains("identity.kind")
        );
        assert!(err("").contains("at least one [[backends]]"));
    }

    #[test]
    fn host_of_another_cloud_is_a_config_error() {
        let e = err("[[backends]]\nname='a'\nendpoint='https://res.openai.azure.us'");
        assert!(e.contains("belongs to the usgov cloud"), "{e}");
        let c = parse("[azure]\ncloud='usgov'\n[[backends]]\nname='a'\nendpoint='https://res.openai.azure.us'").unwrap();
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://cognitiveservices.azure.us/.default"
        );
    }

    #[test]
    fn scope_follows_host_and_can_be_overridden() {
        let c = parse("[[backends]]\nname='f'\nendpoint='https://p.services.ai.azure.com'\n[[backends]]\nname='o'\nendpoint='http://127.0.0.1:9'\nscope='https://ai.azure.com'").unwrap();
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://ai.azure.com/.default"
        );
        assert_eq!(
            c.backends[1].scope.as_str(),
            "https://ai.azure.com/.default"
        );
        assert_eq!(c.scopes().len(), 1);
    }

    #[test]
    fn regional_endpoint_is_a_warning() {
        let c =
            parse("[[backends]]\nname='r'\nendpoint='https://eastus.api.cognitive.microsoft.com'")
                .unwrap();
        assert!(
            c.notes
                .iter()
                .any(|n| n.level == NoteLevel::Warning && n.message.contains("custom subdomain"))
        );
    }

    #[test]
    fn no_keys_is_allowed_only_on_loopback() {
        let c = parse("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'").unwrap();
        assert!(c.allow_unauthenticated);
        let e = err(
            "[server]\nlisten='0.0.0.0:8080'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'",
        );
        assert!(e.contains("is not loopback"), "{e}");
        let c = parse("[server]\nlisten='0.0.0.0:8080'\n[inbound]\nallow_unauthenticated=true\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'").unwrap();
        assert!(c.allow_unauthenticated);
        let c = parse(ISSUE_SHAPE).unwrap();
        assert!(!c.allow_unauthenticated);
    }

    #[test]
    fn workers_default_to_the_cpus_and_reject_zero_and_absurd_counts() {
        let backend = "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'";
        let c = parse(backend).unwrap();
        assert_eq!(c.server.workers, default_workers());
        let c = parse(&format!("[server]\nworkers = 3\n{backend}")).unwrap();
        assert_eq!(c.server.workers.get(), 3);
        for bad in [0, MAX_WORKERS + 1] {
            let e = err(&format!("[server]\nworkers = {bad}\n{backend}"));
            assert!(
                e.contains(&format!(
                    "server.workers: {bad} is not between 1 and {MAX_WORKERS}"
                )),
                "{e}"
            );
        }
    }
}
