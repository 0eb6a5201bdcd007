//! Shared state of one emulator: identities, signing key, scripted faults, counters and the request log.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

use super::EmulatorConfig;
use super::apps::{App, AppRegistration};
use super::faults::{Fault, IdentityFault, OboFault, OboFaultRule};
use super::keys::{ExternalTokenSpec, Grant, MintSpec, SigningKey};

/// How many data-plane requests [`Shared::requests`] keeps.
const REQUEST_LOG_CAPACITY: usize = 1000;
/// How many on-behalf-of requests [`Shared::obo_requests`] keeps.
const OBO_LOG_CAPACITY: usize = 100;

/// A snapshot of the emulator's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to any token endpoint (Entra, App Service MSI, IMDS), failed ones included.
    pub token_requests: u64,
    /// Requests to the Entra token endpoints.
    pub entra_token_requests: u64,
    /// Requests to the App Service managed identity endpoint.
    pub msi_token_requests: u64,
    /// Requests to the IMDS managed identity endpoint.
    pub imds_token_requests: u64,
    /// Requests to the data plane on any listener, whatever their outcome.
    pub data_requests: u64,
    /// SSE responses currently being written.
    pub open_streams: u64,
    /// SSE responses whose client went away before the end.
    pub cancelled_streams: u64,
    /// Requests to the Entra token endpoint with the on-behalf-of grant, failed ones included.
    #[serde(default)]
    pub obo_requests: u64,
    /// On-behalf-of exchanges that issued a token.
    #[serde(default)]
    pub obo_exchanges: u64,
}

/// One data-plane request as the emulator received it. `Debug` shows credential headers and
/// credential query parameters as `<redacted>`; the fields keep them for assertions.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    pub method: String,
    pub path_and_query: String,
    /// Lower-case names, values as received (credentials included: this is test infrastructure).
    pub headers: Vec<(String, String)>,
    /// The `aud` of the bearer token sent (for Speech's `aad#…#token` form, of the token inside),
    /// read without verification.
    pub bearer_audience: Option<String>,
    /// The `oid` of the bearer token, when the data plane verified its signature and lifetime
    /// (whatever its audience; for Speech's `aad#…#token` form, the token inside); `None` for
    /// keys, tokens from `issueToken`, requests a fault answered first, and claims that are not
    /// strings.
    #[serde(default)]
    pub bearer_oid: Option<String>,
    /// The bearer's client application: `azp` (v2 tokens) or `appid` (v1), on the same terms.
    #[serde(default)]
    pub bearer_app_id: Option<String>,
    /// The bearer's delegated scopes (`scp`, user tokens only), on the same terms.
    #[serde(default)]
    pub bearer_scp: Option<String>,
    pub body_len: usize,
    /// The `model` of a JSON body, as received (the v1 API names the deployment there).
    pub body_model: Option<String>,
    /// The status answered; 0 while no answer has been sent (a `Hang` fault, or still running).
    pub status: u16,
    /// Which credential the request carried, classified without verifying it.
    #[serde(default)]
    pub auth: AuthForm,
    /// `Ocp-Apim-ResourceId`, as received (Translator's global endpoint with Entra).
    #[serde(default)]
    pub resource_id_header: Option<String>,
    /// `Ocp-Apim-Subscription-Region`, as received (Translator).
    #[serde(default)]
    pub region_header: Option<String>,
    /// Names (as received) of query parameters that carry a credential: `api-key`,
    /// `subscription-key`, `Subscription-Key`, `Ocp-Apim-Subscription-Key`, `apikey`,
    /// matched case-insensitively. Empty when none reached the emulator.
    #[serde(default)]
    pub query_credentials: Vec<String>,
}

/// The credential a request carried, as the emulator classified it. Never holds the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "form")]
pub enum AuthForm {
    /// No `Authorization`, `api-key` or `Ocp-Apim-Subscription-Key` header.
    #[default]
    None,
    /// An `api-key` header.
    ApiKey,
    /// An `Ocp-Apim-Subscription-Key` header.
    SubscriptionKey,
    /// `Authorization: Bearer <JWT>` that is not one of the emulator's `issueToken` tokens
    /// (an Entra token, or a forged one); the audience is read without verification.
    Bearer { audience: Option<String> },
    /// `Authorization: Bearer <token from issueToken>` (Speech, Translator).
    IssuedToken,
    /// Speech's `Authorization: Bearer aad#{resource id}#{Entra token}`.
    SpeechAad {
        resource_id: String,
        audience: Option<String>,
    },
    /// Any other `Authorization` value (another scheme, or a bearer that is no JWT).
    Other,
}

/// How the client of an on-behalf-of request proved it is the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuthKind {
    /// `client_secret` (or HTTP Basic).
    Secret,
    /// A `client_assertion` signed by a registered certificate (`iss` = the client id).
    Certificate,
    /// A `client_assertion` from another issuer, matched to a federated identity credential
    /// (a managed identity's or a workload's token).
    FederatedCredential,
}

/// One on-behalf-of request's non-secret facts (never the secret, the assertions or the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OboRequest {
    /// The tenant in the token endpoint's path.
    pub tenant: String,
    pub client_id: Option<String>,
    /// How the client authenticated; `None` when it did not get that far.
    pub client_auth: Option<ClientAuthKind>,
    pub grant_type: String,
    pub requested_token_use: Option<String>,
    pub scope: Option<String>,
    /// The user assertion's `oid`, once the assertion verified.
    pub user_oid: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The AADSTS code of a refusal.
    pub error_code: Option<u32>,
}

/// How many exchanges issued a token for one user to one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OboExchangeCount {
    pub client_id: String,
    pub user_oid: String,
    pub count: u64,
}

/// What the data plane learned of a bearer token it verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BearerFacts {
    pub(crate) oid: Option<String>,
    pub(crate) app_id: Option<String>,
    pub(crate) scp: Option<String>,
}

/// Which token endpoint a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenEndpoint {
    Entra,
    Msi,
    Imds,
}

#[derive(Default)]
struct Counters {
    token_requests: AtomicU64,
    entra_token_requests: AtomicU64,
    msi_token_requests: AtomicU64,
    imds_token_requests: AtomicU64,
    data_requests: AtomicU64,
    open_streams: AtomicU64,
    cancelled_streams: AtomicU64,
    obo_requests: AtomicU64,
    obo_exchanges: AtomicU64,
}

#[derive(Default)]
struct OboLog {
    requests: VecDeque<OboRequest>,
    /// Exchanges that issued a token, per (client id, user oid).
    exchanges: HashMap<(String, String), u64>,
    /// Checked most specific first; among equals, the latest added.
    faults: Vec<OboFaultRule>,
}

#[derive(Default)]
struct RequestLog {
    next_seq: u64,
    entries: VecDeque<(u64, SeenRequest)>,
}

/// Everything the listeners of one emulator share.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    key: RwLock<Arc<SigningKey>>,
    apps: Mutex<HashMap<String, App>>,
    user_assigned: Mutex<BTreeSet<String>>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    identity_fault: Mutex<Option<IdentityFault>>,
    obo: Mutex<OboLog>,
    token_lifetime_ms: AtomicU64,
    revocation_epoch: AtomicU32,
    counters: Counters,
    log: Mutex<RequestLog>,
    shutdown: watch::Sender<bool>,
    /// Signs the tokens Speech's and Translator's `issueToken` hand out (HS256).
    sts_secret: [u8; 32],
    /// Listeners opened after start (`add_service`, the control API), stopped with the rest.
    pub(crate) extra_servers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The loopback address the first listener bound, for listeners opened later.
    pub(crate) listen_ip: std::sync::OnceLock<std::net::IpAddr>,
}

impl ClientAuthKind {
    /// `appidacr`/`azpacr`: "1" for a secret, "2" for a certificate or another assertion.
    /// Source: Microsoft Learn, "Access token claims reference".
    pub(crate) fn acr(self) -> &'static str {
        match self {
            ClientAuthKind::Secret => "1",
            ClientAuthKind::Certificate | ClientAuthKind::FederatedCredential => "2",
        }
    }
}

impl std::fmt::Debug for SeenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if is_credential_header(n) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        let path = redact_query_credentials(&self.path_and_query);
        f.debug_struct("SeenRequest")
            .field("method", &self.method)
            .field("path_and_query", &path)
            .field("headers", &headers)
            .field("bearer_audience", &self.bearer_audience)
            .field("bearer_oid", &self.bearer_oid)
            .field("bearer_app_id", &self.bearer_app_id)
            .field("bearer_scp", &self.bearer_scp)
            .field("body_len", &self.body_len)
            .field("body_model", &self.body_model)
            .field("status", &self.status)
            .field("auth", &self.auth)
            .field("resource_id_header", &self.resource_id_header)
            .field("region_header", &self.region_header)
            .field("query_credentials", &self.query_credentials)
            .finish()
    }
}

impl SeenRequest {
    /// The first value of a header; `name` is matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn from_parts(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Self {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let auth = classify_auth(
            find("authorization"),
            find("api-key").is_some(),
            find("ocp-apim-subscription-key").is_some(),
        );
        let bearer_audience = match &auth {
            AuthForm::Bearer { audience } | AuthForm::SpeechAad { audience, .. } => {
                audience.clone()
            }
            AuthForm::None
            | AuthForm::ApiKey
            | AuthForm::SubscriptionKey
            | AuthForm::IssuedToken
            | AuthForm::Other => None,
        };
        let resource_id_header = find("ocp-apim-resourceid").map(str::to_owned);
        let region_header = find("ocp-apim-subscription-region").map(str::to_owned);
        let query_credentials = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(name, _)| name.into_owned())
                    .filter(|name| is_credential_query(name))
                    .collect()
            })
            .unwrap_or_default();
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let body_model = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned));
        SeenRequest {
            method: method.as_str().to_owned(),
            path_and_query,
            headers,
            bearer_audience,
            bearer_oid: None,
            bearer_app_id: None,
            bearer_scp: None,
            body_len: body.len(),
            body_model,
            status: 0,
            auth,
            resource_id_header,
            region_header,
            query_credentials,
        }
    }
}

/// Headers whose values are credentials.
fn is_credential_header(name: &str) -> bool {
    ["authorization", "api-key", "ocp-apim-subscription-key"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

/// Query parameters Azure services read a key from.
pub(crate) fn is_credential_query(name: &str) -> bool {
    [
        "api-key",
        "subscription-key",
        "ocp-apim-subscription-key",
        "apikey",
    ]
    .iter()
    .any(|c| name.eq_ignore_ascii_case(c))
}

/// A path and query with the values of credential parameters replaced.
fn redact_query_credentials(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if is_credential_query(name) {
                format!("{name}=<redacted>")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

/// Classifies the credential headers without verifying anything.
fn classify_auth(authorization: Option<&str>, api_key: bool, subscription_key: bool) -> AuthForm {
    if let Some(value) = authorization {
        let Some(token) = bearer_token(value) else {
            return AuthForm::Other;
        };
        if let Some(rest) = token.strip_prefix("aad#") {
            let (resource_id, inner) = rest.rsplit_once('#').unwrap_or((rest, ""));
            return AuthForm::SpeechAad {
                resource_id: resource_id.to_owned(),
                audience: crate::jwt::claims_unverified(inner)
                    .ok()
                    .and_then(|c| c.audience().map(str::to_owned)),
            };
        }
        return match crate::jwt::claims_unverified(token) {
            Ok(claims) if claims.iss.as_deref() == Some(crate::services::sts::ISSUER) => {
                AuthForm::IssuedToken
            }
            Ok(claims) => AuthForm::Bearer {
                audience: claims.audience().map(str::to_owned),
            },
            Err(_) => AuthForm::Other,
        };
    }
    if subscription_key {
        AuthForm::SubscriptionKey
    } else if api_key {
        AuthForm::ApiKey
    } else {
        AuthForm::None
    }
}

impl Shared {
    pub(crate) fn new(config: EmulatorConfig, key: Arc<SigningKey>) -> Self {
        let lifetime = duration_ms(config.token_lifetime);
        let (shutdown, _) = watch::channel(false);
        Shared {
            config,
            key: RwLock::new(key),
            apps: Mutex::default(),
            user_assigned: Mutex::default(),
            faults: Mutex::default(),
            identity_fault: Mutex::default(),
            obo: Mutex::default(),
            token_lifetime_ms: AtomicU64::new(lifetime),
            revocation_epoch: AtomicU32::new(0),
            counters: Counters::default(),
            log: Mutex::default(),
            shutdown,
            sts_secret: random_secret(),
            extra_servers: Mutex::default(),
            listen_ip: std::sync::OnceLock::new(),
        }
    }

    // --- keys and tokens ---

    pub(crate) fn signing_key(&self) -> Arc<SigningKey> {
        Arc::clone(&self.key.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the signing key (and with it the whole JWKS); returns the new kid. On the
    /// (theoretical) failure to generate a key, keeps the current one and returns its kid.
    pub(crate) fn rotate_signing_key(&self) -> String {
        match SigningKey::generate() {
            Ok(key) => {
                let kid = key.kid().to_owned();
                *self.key.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                kid
            }
            Err(e) => {
                tracing::error!(error = %e, "emulator: could not generate a signing key; keeping the current one");
                self.signing_key().kid().to_owned()
            }
        }
    }

    pub(crate) fn mint(&self, spec: &MintSpec) -> String {
        let grant = spec.to_grant(&self.config, self.revocation_epoch());
        self.signing_key().sign(&grant)
    }

    pub(crate) fn mint_external(&self, spec: &ExternalTokenSpec) -> String {
        self.signing_key().sign_external(spec)
    }

    /// Signs a token the emulator issues from one of its token endpoints.
    pub(crate) fn issue(&self, grant: &Grant) -> String {
        self.signing_key().sign(grant)
    }

    pub(crate) fn token_lifetime(&self) -> Duration {
        Duration::from_millis(self.token_lifetime_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_token_lifetime(&self, lifetime: Duration) {
        self.token_lifetime_ms
            .store(duration_ms(lifetime), Ordering::Relaxed);
    }

    /// Seconds a newly issued token lives: at least 1.
    pub(crate) fn token_lifetime_secs(&self) -> i64 {
        let secs = self.token_lifetime().as_secs().max(1);
        i64::try_from(secs).unwrap_or(i64::MAX / 2)
    }

    pub(crate) fn revocation_epoch(&self) -> u32 {
        self.revocation_epoch.load(Ordering::SeqCst)
    }

    /// Every token issued so far carries an older epoch and is rejected from now on.
    pub(crate) fn revoke_issued_tokens(&self) {
        self.revocation_epoch.fetch_add(1, Ordering::SeqCst);
    }

    // --- identities ---

    pub(crate) fn register_app(&self, tenant_id: &str, client_id: &str, secret: &str) {
        // A registration without certificates cannot fail.
        let _ = self.register(AppRegistration::new(tenant_id, client_id).with_secret(secret));
    }

    /// Registers (or replaces) an app; an unreadable certificate refuses it with the reason.
    pub(crate) fn register(&self, registration: AppRegistration) -> Result<(), String> {
        let app = App::from_registration(registration)?;
        lock(&self.apps).insert(app.client_id.clone(), app);
        Ok(())
    }

    /// Replaces the app roles of a registered app; `false` if there is no such app.
    pub(crate) fn set_app_roles(&self, client_id: &str, roles: Vec<String>) -> bool {
        match lock(&self.apps).get_mut(client_id) {
            Some(app) => {
                app.roles = roles;
                true
            }
            None => false,
        }
    }

    pub(crate) fn expire_app_secret(&self, client_id: &str) {
        if let Some(app) = lock(&self.apps).get_mut(client_id) {
            app.expired = true;
        }
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<App> {
        lock(&self.apps).get(client_id).cloned()
    }

    /// The configured tenant and the tenants of registered apps exist; no other.
    pub(crate) fn tenant_exists(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.config.tenant_id)
            || lock(&self.apps)
                .values()
                .any(|a| a.tenant_id.eq_ignore_ascii_case(tenant))
    }

    pub(crate) fn register_user_assigned(&self, client_id: &str) {
        lock(&self.user_assigned).insert(client_id.to_ascii_lowercase());
    }

    pub(crate) fn user_assigned(&self) -> Vec<String> {
        lock(&self.user_assigned).iter().cloned().collect()
    }

    // --- faults ---

    pub(crate) fn script(&self, deployment: &str, faults: Vec<Fault>) {
        lock(&self.faults)
            .entry(deployment.to_owned())
            .or_default()
            .extend(faults);
    }

    /// Puts a popped fault back at the head of its deployment's queue.
    pub(crate) fn unpop_fault(&self, deployment: &str, fault: Fault) {
        lock(&self.faults)
            .entry(deployment.to_owned())
            .or_default()
            .push_front(fault);
    }

    pub(crate) fn pop_fault(&self, deployment: &str) -> Option<Fault> {
        lock(&self.faults)
            .get_mut(deployment)
            .and_then(VecDeque::pop_front)
    }

    pub(crate) fn identity_fault(&self) -> Option<IdentityFault> {
        lock(&self.identity_fault).clone()
    }

    pub(crate) fn set_identity_fault(&self, fault: Option<IdentityFault>) {
        *lock(&self.identity_fault) = fault;
    }

    pub(crate) fn add_obo_fault(&self, rule: OboFaultRule) {
        lock(&self.obo).faults.push(rule);
    }

    pub(crate) fn clear_obo_faults(&self) {
        lock(&self.obo).faults.clear();
    }

    /// The fault for this app and user: the rule naming both, else the user, else the app,
    /// else a global one; among equals the latest added.
    pub(crate) fn obo_fault(&self, client_id: &str, user_oid: Option<&str>) -> Option<OboFault> {
        let obo = lock(&self.obo);
        obo.faults
            .iter()
            .rev()
            .filter(|r| r.matches(client_id, user_oid))
            .max_by_key(|r| r.specificity())
            .map(|r| r.fault.clone())
    }

    // --- counters ---

    pub(crate) fn count_token_request(&self, endpoint: TokenEndpoint) {
        let c = &self.counters;
        c.token_requests.fetch_add(1, Ordering::Relaxed);
        let specific = match endpoint {
            TokenEndpoint::Entra => &c.entra_token_requests,
            TokenEndpoint::Msi => &c.msi_token_requests,
            TokenEndpoint::Imds => &c.imds_token_requests,
        };
        specific.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_obo_request(&self) {
        self.counters.obo_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Logs an on-behalf-of request; one that issued a token is counted for its app and user.
    pub(crate) fn record_obo(&self, request: OboRequest) {
        let mut obo = lock(&self.obo);
        if request.status == 200 {
            self.counters.obo_exchanges.fetch_add(1, Ordering::Relaxed);
            if let (Some(client), Some(oid)) = (&request.client_id, &request.user_oid) {
                *obo.exchanges
                    .entry((client.clone(), oid.clone()))
                    .or_default() += 1;
            }
        }
        if obo.requests.len() >= OBO_LOG_CAPACITY {
            obo.requests.pop_front();
        }
        obo.requests.push_back(request);
    }

    pub(crate) fn obo_requests(&self) -> Vec<OboRequest> {
        lock(&self.obo).requests.iter().cloned().collect()
    }

    pub(crate) fn obo_exchange_counts(&self) -> Vec<OboExchangeCount> {
        let mut counts: Vec<OboExchangeCount> = lock(&self.obo)
            .exchanges
            .iter()
            .map(|((client_id, user_oid), count)| OboExchangeCount {
                client_id: client_id.clone(),
                user_oid: user_oid.clone(),
                count: *count,
            })
            .collect();
        counts.sort_by(|a, b| (&a.client_id, &a.user_oid).cmp(&(&b.client_id, &b.user_oid)));
        counts
    }

    pub(crate) fn clear_obo_log(&self) {
        let mut obo = lock(&self.obo);
        obo.requests.clear();
        obo.exchanges.clear();
    }

    pub(crate) fn count_data_request(&self) {
        self.counters.data_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_opened(&self) {
        self.counters.open_streams.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn stream_closed(&self, cancelled: bool) {
        self.counters.open_streams.fetch_sub(1, Ordering::SeqCst);
        if cancelled {
            self.counters
                .cancelled_streams
                .fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            token_requests: c.token_requests.load(Ordering::Relaxed),
            entra_token_requests: c.entra_token_requests.load(Ordering::Relaxed),
            msi_token_requests: c.msi_token_requests.load(Ordering::Relaxed),
            imds_token_requests: c.imds_token_requests.load(Ordering::Relaxed),
            data_requests: c.data_requests.load(Ordering::Relaxed),
            open_streams: c.open_streams.load(Ordering::SeqCst),
            cancelled_streams: c.cancelled_streams.load(Ordering::SeqCst),
            obo_requests: c.obo_requests.load(Ordering::Relaxed),
            obo_exchanges: c.obo_exchanges.load(Ordering::Relaxed),
        }
    }

    // --- request log ---

    /// Appends a request to the log and returns its sequence number for [`Shared::set_status`].
    pub(crate) fn record(&self, request: SeenRequest) -> u64 {
        let mut log = lock(&self.log);
        let seq = log.next_seq;
        log.next_seq += 1;
        if log.entries.len() >= REQUEST_LOG_CAPACITY {
            log.entries.pop_front();
        }
        log.entries.push_back((seq, request));
        seq
    }

    pub(crate) fn set_status(&self, seq: u64, status: u16) {
        let mut log = lock(&self.log);
        if let Some((_, r)) = log.entries.iter_mut().rev().find(|(s, _)| *s == seq) {
            r.status = status;
        }
    }

    /// Notes whose token a logged request carried.
    pub(crate) fn set_bearer(&self, seq: u64, facts: BearerFacts) {
        let mut log = lock(&self.log);
        if let Some((_, r)) = log.entries.iter_mut().rev().find(|(s, _)| *s == seq) {
            r.bearer_oid = facts.oid;
            r.bearer_app_id = facts.app_id;
            r.bearer_scp = facts.scp;
        }
    }

    pub(crate) fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.log)
            .entries
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.log).entries.clear();
    }

    // --- shutdown ---

    pub(crate) fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Resolves once the emulator is shutting down.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which also means shutdown.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps, but wakes early (returning `false`) when the emulator shuts down.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        if duration.is_zero() {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.stopped() => false,
        }
    }
}

/// The token of an `Authorization: Bearer …` value.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 32 random bytes (two v4 uuids).
fn random_secret() -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    out[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    out
}

impl Shared {
    pub(crate) fn sts_secret(&self) -> &[u8] {
        &self.sts_secret
    }
}

/// Locks, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `given` equals `expected`, compared in constant time.
pub(crate) fn key_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    fn shared() -> Shared {
        let key = keys::first_key().unwrap();
        Shared::new(EmulatorConfig::default(), key)
    }

    #[test]
    fn request_log_is_a_bounded_ring_and_statuses_follow_sequence_numbers() {
        let s = shared();
        let req = |n: usize| SeenRequest {
            method: "POST".into(),
            path_and_query: format!("/r/{n}"),
            headers: vec![("api-key".into(), "k".into())],
            bearer_audience: None,
            bearer_oid: None,
            bearer_app_id: None,
            bearer_scp: None,
            body_len: n,
            body_model: None,
            status: 0,
            auth: AuthForm::ApiKey,
            resource_id_header: None,
            region_header: None,
            query_credentials: Vec::new(),
        };
        let first = s.record(req(0));
        for n in 1..=REQUEST_LOG_CAPACITY {
            s.record(req(n));
        }
        s.set_status(first, 500); // already evicted: no effect, no panic
        let all = s.requests();
        assert_eq!(all.len(), REQUEST_LOG_CAPACITY);
        assert_eq!(all[0].path_and_query, "/r/1");
        let last = s.record(req(9999));
        s.set_status(last, 201);
        assert_eq!(s.requests().last().unwrap().status, 201);
        assert_eq!(s.requests().last().unwrap().header("API-KEY"), Some("k"));
        s.clear_requests();
        assert!(s.requests().is_empty());
    }

    #[test]
    fn faults_pop_in_order_per_deployment() {
        let s = shared();
        s.script("gpt-4o", vec![Fault::Status(500), Fault::Hang]);
        assert_eq!(s.pop_fault("other"), None);
        assert_eq!(s.pop_fault("gpt-4o"), Some(Fault::Status(500)));
        assert_eq!(s.pop_fault("gpt-4o"), Some(Fault::Hang));
        assert_eq!(s.pop_fault("gpt-4o"), None);
    }

    #[test]
    fn bearer_values_are_parsed_strictly() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn secrets_compare_exactly_and_stay_out_of_debug() {
        let s = shared();
        s.register_app("t", "c", "s3cret");
        let app = s.app("c").unwrap();
        assert!(app.secret_matches("s3cret"));
        assert!(!app.secret_matches("s3cre"));
        assert!(!format!("{app:?}").contains("s3cret"));
        assert!(s.tenant_exists("t"));
        assert!(!s.tenant_exists("u"));
    }
}
