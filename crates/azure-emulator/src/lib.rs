//! A local stand-in for Azure on loopback: Entra ID, managed identity and the Azure OpenAI data plane.
//!
//! [`Emulator::start`] binds `127.0.0.1:0` and serves, on one listener:
//! - Entra: `POST /{tenant}/oauth2/v2.0/token` (and v1 `/oauth2/token`) with the
//!   client-credentials grant and the on-behalf-of grant (`obo`), clients proven by secret,
//!   certificate or federated credential (`client_auth`, registered as [`AppRegistration`]s),
//!   OIDC metadata, JWKS and instance discovery, with real AADSTS error bodies;
//! - managed identity: App Service `GET /msi/token` and IMDS
//!   `GET /metadata/identity/oauth2/token`;
//! - the Azure OpenAI data plane (`/openai/...`), which verifies bearer tokens against the
//!   emulator's own JWKS and answers with Azure's own error bodies — including realtime over
//!   WebSocket (`realtime`), Speech over WebSocket (`speech`) and multipart uploads (`files`);
//! - a control API under `/emulator/` for out-of-process use.
//!
//! [`Emulator::add_resource`] opens more listeners that share the state and serve only the data
//! plane, as a resource of another kind (Foundry, regional endpoint). [`Emulator::add_service`]
//! does the same for the other Azure AI services, each with its own [`ServiceOptions`]
//! (resource id, region, key, page size, switches): a multi-service resource's custom domain
//! ([`ResourceKind::AiServices`]: Speech, Translator, Document Intelligence, Language, Content
//! Safety, Vision and OpenAI), Speech's regional hosts ([`ResourceKind::SpeechRegional`]),
//! Translator's global host ([`ResourceKind::TranslatorGlobal`]) and Azure AI Search
//! ([`ResourceKind::Search`]). Nothing here ever binds anything but loopback or calls out to the
//! network.
//!
//! Azure's rules — which audience each kind of resource accepts in each [`Cloud`], login hosts,
//! issuers, error bodies — are stated in this crate on its own, so a product tested against the
//! emulator is checked against them rather than against its own assumptions. The
//! `azure-emulator` binary serves one emulator on a loopback address for out-of-process use.
//!
//! Stopping: [`Emulator::shutdown`] stops accepting, ends hanging requests and open streams and
//! waits (briefly) for the listeners to finish; dropping an [`Emulator`] does the same without
//! waiting.

mod apps;
mod auth;
mod certs;
mod client_auth;
mod cloud;
mod conn;
mod control;
mod entra;
mod faults;
mod files;
mod jwt;
mod keys;
mod msi;
mod obo;
mod openai;
mod realtime;
mod replies;
mod respond;
mod samples;
mod services;
mod speech;
mod state;
mod stream;

pub use apps::{AppRegistration, DEFAULT_DELEGATED_SCOPE, FederatedCredential};
pub use certs::{AssertionAlg, TestCertificate};
pub use cloud::{Cloud, HostKind};
pub use faults::{Fault, Garble, IdentityFault, OboFault, OboFaultRule};
pub use keys::{ExternalTokenSpec, GROUPS_OVERAGE_LIMIT, MintSpec, TokenVersion};
pub use samples::{AzureSample, SampleContext};
pub use services::{
    DEFAULT_PAGE_SIZE, DEFAULT_REGION, FOREIGN_BLOB_HOST, FOREIGN_HOST, SearchAuthFailure,
    ServiceOptions,
};
pub use state::{AuthForm, ClientAuthKind, OboExchangeCount, OboRequest, SeenRequest, Stats};

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use state::{Shared, lock};

/// The tenant the emulator's directory has by default.
pub const DEFAULT_TENANT_ID: &str = "72f988bf-0000-4000-8000-00000000e1e1";
/// Client id (`appid`) of the emulator's managed identity by default.
pub const DEFAULT_MI_CLIENT_ID: &str = "5e5c3f1a-0000-4000-8000-0000000000a1";
/// Object id (`oid`) of the emulator's managed identity by default.
pub const DEFAULT_MI_OBJECT_ID: &str = "b7f1c1d2-0000-4000-8000-0000000000b1";
/// The `X-IDENTITY-HEADER` value the App Service endpoint expects by default.
pub const DEFAULT_IDENTITY_HEADER: &str = "emulator-identity-header";

/// Largest request body a listener reads.
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// How long [`Emulator::shutdown`] waits for a listener before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the emulated Azure behaves.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// Decides issuers, metadata hosts and the audiences the data plane accepts.
    pub cloud: Cloud,
    pub tenant_id: String,
    /// Lifetime of tokens from the token endpoints (at least one second).
    pub token_lifetime: Duration,
    /// Deployment names, case-sensitive.
    pub deployments: Vec<String>,
    /// The managed identity's client id (`appid`).
    pub managed_identity_client_id: String,
    /// The managed identity's object id (`oid`).
    pub managed_identity_object_id: String,
    /// The `X-IDENTITY-HEADER` value the App Service endpoint expects.
    pub identity_header: String,
    /// The resource key; `None` means `disableLocalAuth` (every key is refused).
    pub resource_key: Option<String>,
    /// SSE content events per streamed answer.
    pub stream_events: usize,
    /// Delay between SSE events.
    pub stream_interval: Duration,
    /// Added before every data-plane answer.
    pub latency: Duration,
    /// Chat and completions answers take their ids and `created` from their text, so the same
    /// prompt gets the same bytes (for comparing answers byte for byte).
    pub stable_ids: bool,
}

/// The kind of Azure AI resource (or host) a listener plays; it decides the paths it serves
/// and the credentials and audience it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    /// Azure OpenAI / Cognitive Services: the cognitiveservices audience.
    OpenAi,
    /// Azure AI Foundry: the ai.azure.com audience.
    Foundry,
    /// A shared regional endpoint: keys only; bearer tokens get 400.
    Regional,
    /// A multi-service Azure AI services resource on its custom domain
    /// (`{name}.cognitiveservices.azure.com`): Speech under `/tts`, `/stt`, `/speechtotext`,
    /// `/sts`; Translator under `/translator/text/v3.0`; Document Intelligence, Language,
    /// Content Safety, Vision; every other path is the OpenAI data plane.
    AiServices,
    /// Speech's regional hosts played together: `{region}.tts.speech.microsoft.com`,
    /// `{region}.stt.speech.microsoft.com` and `{region}.api.cognitive.microsoft.com`
    /// (`issueToken`, `/speechtotext`).
    SpeechRegional,
    /// Translator's global host `api.cognitive.microsofttranslator.com` (plus
    /// `/sts/v1.0/issueToken` for the resource, as its regional token host serves it).
    TranslatorGlobal,
    /// An Azure AI Search service (`{service}.search.windows.net`): the search audience.
    Search,
}

/// A running emulator. Dropping it stops its listeners.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    url: url::Url,
    servers: Mutex<Vec<JoinHandle<()>>>,
}

/// What every handler gets: the shared state, the kind of resource its listener plays and that
/// resource's own options and state.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) kind: ResourceKind,
    pub(crate) service: Arc<services::Service>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            cloud: Cloud::Public,
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            token_lifetime: Duration::from_secs(3600),
            deployments: vec!["gpt-4o".to_owned(), "text-embedding-3-small".to_owned()],
            managed_identity_client_id: DEFAULT_MI_CLIENT_ID.to_owned(),
            managed_identity_object_id: DEFAULT_MI_OBJECT_ID.to_owned(),
            identity_header: DEFAULT_IDENTITY_HEADER.to_owned(),
            resource_key: None,
            stream_events: 5,
            stream_interval: Duration::from_millis(20),
            latency: Duration::ZERO,
            stable_ids: false,
        }
    }
}

impl ResourceKind {
    /// The audience a bearer token must have for this kind of resource.
    pub(crate) fn audience(self, cloud: Cloud) -> &'static str {
        match self {
            ResourceKind::OpenAi
            | ResourceKind::Regional
            | ResourceKind::AiServices
            | ResourceKind::SpeechRegional
            | ResourceKind::TranslatorGlobal => cloud.cognitive_audience(),
            ResourceKind::Foundry => cloud.foundry_audience(),
            ResourceKind::Search => cloud.search_audience(),
        }
    }

    /// The kebab-case name, as in JSON.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            ResourceKind::OpenAi => "open-ai",
            ResourceKind::Foundry => "foundry",
            ResourceKind::Regional => "regional",
            ResourceKind::AiServices => "ai-services",
            ResourceKind::SpeechRegional => "speech-regional",
            ResourceKind::TranslatorGlobal => "translator-global",
            ResourceKind::Search => "search",
        }
    }

    /// Whether the listener is one of the services of [`services`] rather than the OpenAI
    /// data plane.
    fn is_service(self) -> bool {
        match self {
            ResourceKind::OpenAi | ResourceKind::Foundry | ResourceKind::Regional => false,
            ResourceKind::AiServices
            | ResourceKind::SpeechRegional
            | ResourceKind::TranslatorGlobal
            | ResourceKind::Search => true,
        }
    }
}

impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("cloud", &self.cloud)
            .field("tenant_id", &self.tenant_id)
            .field("token_lifetime", &self.token_lifetime)
            .field("deployments", &self.deployments)
            .field(
                "managed_identity_client_id",
                &self.managed_identity_client_id,
            )
            .field(
                "managed_identity_object_id",
                &self.managed_identity_object_id,
            )
            .field("identity_header", &"<redacted>")
            .field(
                "resource_key",
                &self.resource_key.as_ref().map(|_| "<redacted>"),
            )
            .field("stream_events", &self.stream_events)
            .field("stream_interval", &self.stream_interval)
            .field("latency", &self.latency)
            .field("stable_ids", &self.stable_ids)
            .finish()
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start(config: EmulatorConfig) -> io::Result<Emulator> {
        Emulator::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts on `addr`, which must be a loopback address.
    pub async fn start_on(addr: SocketAddr, config: EmulatorConfig) -> io::Result<Emulator> {
        let key = tokio::task::spawn_blocking(keys::first_key)
            .await
            .map_err(io::Error::other)??;
        let shared = Arc::new(Shared::new(config, key));
        let listener = bind_loopback(addr).await?;
        let addr = listener.local_addr()?;
        let _ = shared.listen_ip.set(addr.ip());
        let options = ServiceOptions {
            key: shared.config.resource_key.clone(),
            ..ServiceOptions::default()
        }
        .resolved(ResourceKind::OpenAi);
        let url = url::Url::parse(&format!("http://{addr}/")).map_err(io::Error::other)?;
        let router = Router::new()
            .merge(entra::routes())
            .merge(msi::routes())
            .merge(control::routes())
            .merge(data_plane_routes())
            .fallback(openai::handle)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(Ctx {
                shared: Arc::clone(&shared),
                kind: ResourceKind::OpenAi,
                service: Arc::new(services::Service::new(options)),
            });
        let server = serve(listener, router, &shared);
        Ok(Emulator {
            shared,
            addr,
            url,
            servers: Mutex::new(vec![server]),
        })
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> url::Url {
        self.url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration the emulator started with (later `set_token_lifetime` calls are not
    /// reflected here).
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// Another listener on loopback, sharing this emulator's state, that serves only the data
    /// plane, as a resource of `kind` with the emulator's resource key and default
    /// [`ServiceOptions`]. Returns its base URL.
    pub async fn add_resource(&self, kind: ResourceKind) -> io::Result<url::Url> {
        let options = ServiceOptions {
            key: self.shared.config.resource_key.clone(),
            ..ServiceOptions::default()
        };
        self.add_service(kind, options).await
    }

    /// Another listener on loopback, sharing this emulator's state (tokens, request log,
    /// counters), that plays one resource of `kind` with `options`: its own key (`None`: key
    /// auth off), ARM resource id, region, page size, and its own stored state (search
    /// indexes, long-running operations). Returns its base URL.
    pub async fn add_service(
        &self,
        kind: ResourceKind,
        options: ServiceOptions,
    ) -> io::Result<url::Url> {
        spawn_resource(&self.shared, self.addr.ip(), kind, options).await
    }

    /// Signs a token with the current key.
    pub fn mint(&self, spec: &MintSpec) -> String {
        self.shared.mint(spec)
    }

    /// Signs a token of an issuer outside Entra (a Kubernetes service account token, say) with
    /// the current key: what a workload presents as a federated credential.
    pub fn mint_external(&self, spec: &ExternalTokenSpec) -> String {
        self.shared.mint_external(spec)
    }

    /// Registers an app for the client-credentials grant (its tenant then exists too).
    pub fn register_app(&self, tenant_id: &str, client_id: &str, secret: &str) {
        self.shared.register_app(tenant_id, client_id, secret);
    }

    /// Registers (or replaces) an app with any of its credentials; its tenant then exists. An
    /// unreadable certificate refuses the registration (`InvalidInput`, naming it).
    pub fn register(&self, registration: AppRegistration) -> io::Result<()> {
        self.shared
            .register(registration)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// The object id of an app's service principal in a tenant: the `oid` and `sub` of the
    /// app-only tokens the client-credentials grant issues it (what a federated identity
    /// credential trusting that app names as its subject).
    pub fn service_principal_oid(&self, tenant_id: &str, client_id: &str) -> String {
        entra::service_principal_oid(tenant_id, client_id)
    }

    /// Replaces the app roles assigned to a registered app (the `roles` of its
    /// client-credentials tokens); `false` if no such app is registered.
    pub fn set_app_roles(&self, client_id: &str, roles: Vec<String>) -> bool {
        self.shared.set_app_roles(client_id, roles)
    }

    /// Switches an on-behalf-of fault on until [`Emulator::clear_obo_faults`].
    pub fn add_obo_fault(&self, rule: OboFaultRule) {
        self.shared.add_obo_fault(rule);
    }

    pub fn clear_obo_faults(&self) {
        self.shared.clear_obo_faults();
    }

    /// The last 100 on-behalf-of requests' non-secret facts, oldest first.
    pub fn obo_requests(&self) -> Vec<OboRequest> {
        self.shared.obo_requests()
    }

    /// On-behalf-of exchanges that issued a token, per app and user, sorted.
    pub fn obo_exchange_counts(&self) -> Vec<OboExchangeCount> {
        self.shared.obo_exchange_counts()
    }

    /// Exchanges that issued a token for this user to this app.
    pub fn obo_exchanges(&self, client_id: &str, user_oid: &str) -> u64 {
        self.obo_exchange_counts()
            .into_iter()
            .find(|c| c.client_id == client_id && c.user_oid == user_oid)
            .map_or(0, |c| c.count)
    }

    /// Forgets the on-behalf-of log and per-user counts (not the [`Stats`] totals).
    pub fn clear_obo_log(&self) {
        self.shared.clear_obo_log();
    }

    /// The app's secret grant then fails with AADSTS7000222.
    pub fn expire_app_secret(&self, client_id: &str) {
        self.shared.expire_app_secret(client_id);
    }

    /// A user-assigned identity the managed identity endpoints then serve by `client_id`.
    pub fn register_user_assigned(&self, client_id: &str) {
        self.shared.register_user_assigned(client_id);
    }

    /// Generates a new key that replaces the JWKS entirely (tokens signed with the old key then
    /// fail with an unknown kid); returns the new kid. Blocks for the key generation.
    pub fn rotate_signing_key(&self) -> String {
        self.shared.rotate_signing_key()
    }

    /// The current signing key's kid.
    pub fn signing_kid(&self) -> String {
        self.shared.signing_key().kid().to_owned()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The last 1000 data-plane requests, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests()
    }

    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// Queues faults for a deployment (case-sensitive), or for file uploads under `"files"`;
    /// each data-plane request to it pops one.
    pub fn script(&self, deployment: &str, faults: Vec<Fault>) {
        self.shared.script(deployment, faults);
    }

    /// Applies to every token endpoint (Entra, MSI, IMDS) until cleared with `None`.
    pub fn set_identity_fault(&self, fault: Option<IdentityFault>) {
        self.shared.set_identity_fault(fault);
    }

    /// Lifetime of tokens issued from now on (at least one second).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.set_token_lifetime(lifetime);
    }

    /// Every token issued (or minted) before now is rejected by the data plane with the 401
    /// audience message.
    pub fn revoke_issued_tokens(&self) {
        self.shared.revoke_issued_tokens();
    }

    /// Stops accepting, ends hanging requests and open streams, and waits up to a few seconds
    /// for every listener to finish.
    pub async fn shutdown(self) {
        self.shared.stop();
        let mut servers = std::mem::take(&mut *lock(&self.servers));
        servers.append(&mut lock(&self.shared.extra_servers));
        for mut server in servers {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop();
        for server in lock(&self.servers).drain(..) {
            server.abort();
        }
        for server in lock(&self.shared.extra_servers).drain(..) {
            server.abort();
        }
    }
}

/// Opens a listener for one resource of `kind` on `ip` and serves it until the emulator stops.
pub(crate) async fn spawn_resource(
    shared: &Arc<Shared>,
    ip: std::net::IpAddr,
    kind: ResourceKind,
    options: ServiceOptions,
) -> io::Result<url::Url> {
    let listener = bind_loopback(SocketAddr::new(ip, 0)).await?;
    let addr = listener.local_addr()?;
    let url = url::Url::parse(&format!("http://{addr}/")).map_err(io::Error::other)?;
    let ctx = Ctx {
        shared: Arc::clone(shared),
        kind,
        service: Arc::new(services::Service::new(options.resolved(kind))),
    };
    let router = if kind.is_service() {
        Router::new().fallback(services::handle)
    } else {
        Router::new()
            .merge(data_plane_routes())
            .fallback(openai::handle)
    };
    let router = router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(ctx);
    let server = serve(listener, router, shared);
    lock(&shared.extra_servers).push(server);
    Ok(url)
}

/// The data plane's routes beside the fallback: realtime WebSockets and their ephemeral keys,
/// Speech WebSockets and multipart uploads.
fn data_plane_routes() -> Router<Ctx> {
    use axum::routing::{get, post};
    Router::new()
        .route("/openai/realtime", get(realtime::handle))
        .route("/openai/v1/realtime", get(realtime::handle))
        .route(
            "/openai/v1/realtime/client_secrets",
            post(realtime::client_secret),
        )
        .route(
            "/openai/realtimeapi/sessions",
            post(realtime::preview_session),
        )
        .route("/speech/{*rest}", get(speech::handle))
        .route("/stt/speech/{*rest}", get(speech::handle))
        .route("/openai/files", post(files::upload))
        .route("/openai/v1/files", post(files::upload))
        .route(
            "/openai/deployments/{deployment}/audio/{op}",
            post(files::transcribe),
        )
}

/// Binds `addr` after checking it is loopback: the emulator never listens anywhere else.
async fn bind_loopback(addr: SocketAddr) -> io::Result<TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the emulator binds loopback addresses only, not {addr}"),
        ));
    }
    TcpListener::bind(addr).await
}

/// Serves a router until the emulator stops.
fn serve(listener: TcpListener, router: Router, shared: &Arc<Shared>) -> JoinHandle<()> {
    let mut stop = shared.shutdown_signal();
    let signal = async move {
        // An error means the state is gone, which also means stop.
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    tokio::spawn(conn::serve(listener, router, signal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_secrets() {
        let config = EmulatorConfig {
            resource_key: Some("super-secret-key".into()),
            ..EmulatorConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("super-secret-key"));
        assert!(!shown.contains(DEFAULT_IDENTITY_HEADER));
        assert!(shown.contains("gpt-4o"));
    }

    #[tokio::test]
    async fn refuses_non_loopback_addresses() {
        let err = Emulator::start_on("0.0.0.0:0".parse().unwrap(), EmulatorConfig::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn emulator_handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Emulator>();
    }
}
