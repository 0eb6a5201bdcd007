//! `entra-proxy doctor`: checks a config end to end — config, DNS, reachability, identity,
//! token claims, an authenticated call per deployment — stopping where later checks cannot run.

use super::reach::{self, Endpoint};
use super::{Context, DiagnosisCode, classify};
use crate::claims::Claims;
use crate::cloud::same_audience;
use crate::config::{Backend, Config, NoteLevel};
use crate::identity::{CachedToken, IdentityEnv, IdentityError, TokenCache, build_token_source};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The data-plane API version that still lists a resource's deployments.
const LIST_DEPLOYMENTS_API_VERSION: &str = "2022-12-01";

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skipped => "-",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub millis: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{} {:<44} {:>6} ms  {}\n",
                c.status.mark(),
                c.name,
                c.millis,
                c.detail
            ));
        }
        out.push_str(if self.ok() {
            "\nall checks passed\n"
        } else {
            "\nsome checks failed (✗)\n"
        });
        out
    }
}

struct Recorder {
    checks: Vec<Check>,
}

impl Recorder {
    fn push(
        &mut self,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        started: Instant,
    ) {
        self.checks.push(Check {
            name: name.into(),
            status,
            detail: detail.into(),
            millis: started.elapsed().as_millis() as u64,
        });
    }
}

/// Runs every check for a config file.
pub async fn run(path: &std::path::Path, env: &IdentityEnv) -> Report {
    let mut r = Recorder { checks: Vec::new() };
    let t = Instant::now();
    let config = match Config::load(path) {
        Ok(c) => {
            r.push("config valid", Status::Pass, path.display().to_string(), t);
            c
        }
        Err(e) => {
            r.push("config valid", Status::Fail, e.to_string(), t);
            return Report { checks: r.checks };
        }
    };
    for note in &config.notes {
        let status = match note.level {
            NoteLevel::Normalized | NoteLevel::Warning => Status::Warn,
        };
        r.push("config note", status, note.message.clone(), Instant::now());
    }
    check_config(&config, env, &mut r).await;
    Report { checks: r.checks }
}

async fn check_config(config: &Config, env: &IdentityEnv, r: &mut Recorder) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            r.push("http client", Status::Fail, e.to_string(), Instant::now());
            return;
        }
    };
    let t = Instant::now();
    let source = match build_token_source(config, env) {
        Ok(s) => s,
        Err(e) => {
            r.push("identity configured", Status::Fail, e, t);
            return;
        }
    };
    let tokens = TokenCache::new(source, config.upstream.identity_timeout);
    let identity = IdentityProbe::of(config, env);
    for backend in &config.backends {
        let check = BackendCheck {
            config,
            b: backend,
            host: backend.host().to_string(),
            tokens: &tokens,
            identity: &identity,
            http: &http,
        };
        check.run(r).await;
    }
}

/// The checks of one backend, in order; each step returns what the next needs, or `None` when
/// the chain stops there.
struct BackendCheck<'a> {
    config: &'a Config,
    b: &'a Backend,
    host: String,
    tokens: &'a TokenCache,
    identity: &'a IdentityProbe,
    http: &'a reqwest::Client,
}

impl BackendCheck<'_> {
    fn name(&self, what: &str) -> String {
        format!("{}: {what}", self.b.name)
    }

    async fn run(&self, r: &mut Recorder) {
        if self.dns(r).await.is_none() || self.reachable(r).await.is_none() {
            return;
        }
        let Some(token) = self.token(r).await else {
            return;
        };
        let claims = token.claims.clone().unwrap_or_default();
        self.claims(r, &claims);
        if let Some(probe) = super::probe::for_service(self.b.service, &self.host) {
            self.service_call(r, &token, &claims, &probe).await;
            return;
        }
        if self.b.deployments.is_empty() {
            r.push(
                self.name("call"),
                Status::Skipped,
                "no deployments configured for this backend",
                Instant::now(),
            );
            return;
        }
        let bearer = format!("Bearer {}", token.token.secret.expose_secret());
        // Azure's own list of deployments, fetched once, when a call says one does not exist.
        let mut listed: Option<Option<Vec<String>>> = None;
        for d in &self.b.deployments {
            self.call(r, d, &bearer, &claims, &mut listed).await;
        }
    }

    /// Where the name resolves, and whether that is a private endpoint's address.
    async fn dns(&self, r: &mut Recorder) -> Option<()> {
        let t = Instant::now();
        let host = &self.host;
        let port = self.b.endpoint.port_or_known_default().unwrap_or(443);
        let addrs: Vec<IpAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(a) => a.map(|s| s.ip()).collect(),
            Err(e) => {
                let cause = reach::Unreachable::Dns {
                    host: host.clone(),
                    reason: e.to_string(),
                };
                let detail = format!("{}; fix: {}", cause.cause(), cause.fix(Endpoint::Backend));
                r.push(self.name("DNS"), Status::Fail, detail, t);
                return None;
            }
        };
        let private = addrs.iter().filter(|a| is_private(a)).count();
        let mut list = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // Loopback names (tests, the emulator) never leave the machine.
        let loopback_only = !addrs.is_empty() && addrs.iter().all(IpAddr::is_loopback);
        if host.parse::<IpAddr>().is_err() && !loopback_only {
            list = with_cname_chain(host, list).await;
        }
        if private == addrs.len() {
            let detail = format!("{host} → {list} (private)");
            r.push(self.name("DNS"), Status::Pass, detail, t);
        } else {
            r.push(
                self.name("DNS"),
                Status::Warn,
                format!("{host} → {list} (public): with public network access disabled Azure answers 403; resolve it to the private endpoint (privatelink.openai.azure.com / privatelink.cognitiveservices.azure.com zone linked to this VNet)"),
                t,
            );
        }
        Some(())
    }

    /// TCP (and TLS): any HTTP answer proves the backend is reachable.
    async fn reachable(&self, r: &mut Recorder) -> Option<()> {
        let t = Instant::now();
        let shown = self.b.endpoint.as_str().trim_end_matches('/');
        match self.http.get(self.b.endpoint.clone()).send().await {
            Ok(resp) => {
                let detail = format!("{shown} answered HTTP {}", resp.status().as_u16());
                r.push(self.name("reachable"), Status::Pass, detail, t);
                Some(())
            }
            Err(e) => {
                let text = reach::error_chain(&e);
                let at = format!(
                    "{}:{}",
                    self.host,
                    self.b.endpoint.port_or_known_default().unwrap_or(443)
                );
                let detail = match reach::cause_in_text(&at, 10.0, &text) {
                    Some(cause) => {
                        format!("{}; fix: {}", cause.cause(), cause.fix(Endpoint::Backend))
                    }
                    None => format!("{shown}: {text}"),
                };
                r.push(self.name("reachable"), Status::Fail, detail, t);
                None
            }
        }
    }

    /// A token from the configured identity, or the root cause of why there is none.
    async fn token(&self, r: &mut Recorder) -> Option<std::sync::Arc<CachedToken>> {
        let t = Instant::now();
        let scope = &self.b.scope;
        // An endpoint that cannot be reached is said at once, instead of after the identity's
        // own retries have used up upstream.identity_timeout_secs.
        if let Some(cause) = self.identity.unreachable(self.http).await {
            r.push(
                self.name("token"),
                Status::Fail,
                format!("{scope}: {cause}"),
                t,
            );
            return None;
        }
        match self.tokens.get(scope).await {
            Ok(tok) => {
                let detail = format!("{} gave a token for {scope}", self.tokens.describe());
                r.push(self.name("token"), Status::Pass, detail, t);
                Some(tok)
            }
            Err(e) => {
                let detail = format!("{scope}: {}", self.identity.explain(&e, self.config));
                r.push(self.name("token"), Status::Fail, detail, t);
                None
            }
        }
    }

    /// The token's audience against the backend's.
    fn claims(&self, r: &mut Recorder, claims: &Claims) {
        let t = Instant::now();
        let aud = claims.audience().unwrap_or("(none)");
        let needs = self.b.scope.audience();
        if same_audience(aud, needs) {
            let detail = format!(
                "aud {aud}, tid {}, app {}",
                claims.tid.as_deref().unwrap_or("?"),
                claims.app_id().unwrap_or("?")
            );
            r.push(self.name("token claims"), Status::Pass, detail, t);
        } else {
            let detail = format!("token aud is {aud}, but {} needs {needs}", self.host);
            r.push(self.name("token claims"), Status::Fail, detail, t);
        }
    }

    /// One authenticated call to deployment `d`: an empty body is refused with 400 by a
    /// deployment that exists (nothing is generated, nothing billed) and with 404 by one that
    /// does not.
    async fn call(
        &self,
        r: &mut Recorder,
        d: &str,
        bearer: &str,
        claims: &Claims,
        listed: &mut Option<Option<Vec<String>>>,
    ) {
        let t = Instant::now();
        let name = self.name(&format!("call {d}"));
        let mut url = self.b.endpoint.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty()
                .extend(["openai", "deployments", d, "chat", "completions"]);
        }
        url.query_pairs_mut()
            .append_pair("api-version", &self.b.api_version);
        let sent = self
            .http
            .post(url)
            .header("authorization", bearer)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await;
        let resp = match sent {
            Ok(x) => x,
            Err(e) => {
                r.push(name, Status::Fail, reach::error_chain(&e), t);
                return;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.bytes().await.unwrap_or_default();
        if let Some(meaning) = answer_meaning(status, &body) {
            r.push(name, Status::Pass, format!("deployment {d} {meaning}"), t);
            return;
        }
        let failed = Failed {
            deployment: d,
            status,
            retry_after: retry_after.as_deref(),
            body: &body,
            claims,
            bearer,
        };
        let detail = self.explain_call(failed, listed).await;
        r.push(name, Status::Fail, detail, t);
    }

    /// One authenticated call to a backend of a service beside OpenAI, with the token in the
    /// form that service takes: passes unless the service refuses it (401, 403), which is
    /// explained by the service's own rule.
    async fn service_call(
        &self,
        r: &mut Recorder,
        token: &CachedToken,
        claims: &Claims,
        probe: &super::probe::Probe,
    ) {
        let t = Instant::now();
        let name = self.name(&format!("call {}", self.b.service));
        let base = self.b.endpoint.as_str().trim_end_matches('/');
        let mut answer = None;
        for (i, path) in probe.paths.iter().enumerate() {
            let mut headers = http::HeaderMap::new();
            let bare_path = path.split('?').next().unwrap_or(path);
            self.b
                .presenter
                .apply(bare_path, &token.header, &mut headers);
            let url = format!("{base}{path}");
            let request = match probe.body {
                Some(body) => self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body),
                None => self.http.get(url),
            };
            let resp = match request.headers(headers).send().await {
                Ok(resp) => resp,
                Err(e) => {
                    r.push(name, Status::Fail, reach::error_chain(&e), t);
                    return;
                }
            };
            let status = resp.status().as_u16();
            if status == 404 && i + 1 < probe.paths.len() {
                continue;
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.bytes().await.unwrap_or_default();
            answer = Some((*path, status, challenge, body));
            break;
        }
        let Some((path, status, challenge, body)) = answer else {
            return;
        };
        let form = self
            .b
            .presenter
            .form(path.split('?').next().unwrap_or(path));
        let (status_mark, detail) = match status {
            401 | 403 => (
                Status::Fail,
                self.explain_service(status, challenge.as_deref(), &body, claims, form),
            ),
            404 => (
                Status::Warn,
                format!(
                    "{} ({path}) answered HTTP 404: the token was not refused, but this is not a {} endpoint at that path",
                    probe.what, self.b.service
                ),
            ),
            _ => (
                Status::Pass,
                format!(
                    "{} ({path}) answered HTTP {status}: the service took the token{}",
                    probe.what,
                    match (form, self.b.presenter.sends_translator_headers()) {
                        (crate::services::TokenForm::SpeechAad, _) =>
                            " as aad#<resource id>#<token>",
                        (_, true) => " with Ocp-Apim-ResourceId and Ocp-Apim-Subscription-Region",
                        _ => "",
                    }
                ),
            ),
        };
        r.push(name, status_mark, detail, t);
    }

    /// A service's 401 or 403 explained: by the service's own rule, else the general one.
    fn explain_service(
        &self,
        status: u16,
        challenge: Option<&str>,
        body: &[u8],
        claims: &Claims,
        form: crate::services::TokenForm,
    ) -> String {
        let ctx = Context {
            backend: &self.b.name,
            host: &self.host,
            cloud: self.config.cloud,
            host_kind: self.b.host_kind,
            expected_audience: self.b.scope.audience(),
            token: Some(claims),
            expected_tenant: None,
            deployment: None,
            known_deployments: &[],
            request_path: None,
            endpoint_path: self.b.endpoint.path(),
            api_version: Some(&self.b.api_version),
            now: unix_now(),
        };
        let facts = super::ServiceFacts {
            service: self.b.service,
            form,
            translator_headers: self.b.presenter.sends_translator_headers(),
            resource_id: self.b.resource_id.as_ref().map(|id| id.as_str()),
            region: self.b.region.as_deref(),
            challenge,
        };
        super::services::classify(status, body, &facts, &ctx)
            .or_else(|| classify(status, None, body, &ctx))
            .map_or_else(
                || {
                    format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    )
                },
                |d| d.header_value(),
            )
    }

    /// The diagnosis of a failed call; for a deployment that does not exist, against Azure's own
    /// list of the resource's deployments (not what the config believes), so that a model name
    /// or a near miss is spotted.
    async fn explain_call(
        &self,
        f: Failed<'_>,
        listed: &mut Option<Option<Vec<String>>>,
    ) -> String {
        let ctx = Context {
            backend: &self.b.name,
            host: &self.host,
            cloud: self.config.cloud,
            host_kind: self.b.host_kind,
            expected_audience: self.b.scope.audience(),
            token: Some(f.claims),
            expected_tenant: None,
            deployment: Some(f.deployment),
            known_deployments: &self.b.deployments,
            request_path: None,
            endpoint_path: self.b.endpoint.path(),
            api_version: Some(&self.b.api_version),
            now: unix_now(),
        };
        let mut diagnosis = classify(f.status, f.retry_after, f.body, &ctx);
        if diagnosis
            .as_ref()
            .is_some_and(|x| x.code == DiagnosisCode::DeploymentNotFound)
        {
            if listed.is_none() {
                *listed = Some(azure_deployments(self.http, self.b, f.bearer).await);
            }
            if let Some(Some(actual)) = listed.as_ref() {
                let ctx = Context {
                    known_deployments: actual,
                    ..ctx
                };
                diagnosis = classify(f.status, f.retry_after, f.body, &ctx);
                if actual.is_empty()
                    && let Some(x) = diagnosis.as_mut()
                {
                    x.fix = format!("the resource lists no deployments at all; {}", x.fix);
                }
            }
        }
        match diagnosis {
            Some(diag) => diag.header_value(),
            None => format!(
                "HTTP {}: {}",
                f.status,
                String::from_utf8_lossy(f.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        }
    }
}

/// A call that Azure refused, as [`BackendCheck::explain_call`] reads it.
struct Failed<'a> {
    deployment: &'a str,
    status: u16,
    retry_after: Option<&'a str>,
    body: &'a [u8],
    claims: &'a Claims,
    bearer: &'a str,
}

/// What a probe call's answer says when it means the deployment is there and took the token:
/// a 2xx, or a 400 about the (deliberately empty) body rather than about authentication or the
/// api-version.
fn answer_meaning(status: u16, body: &[u8]) -> Option<String> {
    if (200..300).contains(&status) {
        return Some(format!("answered (HTTP {status})"));
    }
    if status == 400 && !mentions_auth(body) {
        return Some(
            "exists and accepted the token (HTTP 400 is Azure refusing the empty test body, \
             which is sent so that nothing is generated or billed)"
                .to_string(),
        );
    }
    None
}

/// `list` with the CNAME chain of `host` after it, marked when it goes through privatelink.
async fn with_cname_chain(host: &str, list: String) -> String {
    match super::dns::lookup(host, Duration::from_secs(2)).await {
        Ok(res) if !res.cnames.is_empty() => format!(
            "{list} via {}{}",
            res.cnames.join(" → "),
            if res.via_privatelink() {
                " (privatelink)"
            } else {
                ""
            }
        ),
        Ok(_) => list,
        Err(e) => format!("{list} (CNAME chain unknown: {e})"),
    }
}

/// Where the configured identity gets its tokens, tried once before asking for a token.
struct IdentityProbe {
    /// The URL to try and what it is; `None` for the Azure CLI and the `auto` chain.
    endpoint: Option<(url::Url, Endpoint)>,
    timeout: Duration,
    /// The first try's outcome, shared by every backend.
    tried: tokio::sync::OnceCell<Option<String>>,
    client_id: String,
    tenant: String,
}

impl IdentityProbe {
    fn of(config: &Config, env: &IdentityEnv) -> IdentityProbe {
        use crate::config::IdentityConfig as I;
        let entra = |tenant: &str| {
            url::Url::parse(&format!(
                "{}/{tenant}/v2.0/.well-known/openid-configuration",
                config.cloud.authority_host()
            ))
            .ok()
        };
        let or_env = |v: &Option<String>, e: &Option<String>| {
            v.clone().or_else(|| e.clone()).unwrap_or_default()
        };
        let (endpoint, client_id, tenant) = match &config.identity {
            I::ManagedIdentity { client_id } => {
                let (url, kind) = match &env.identity_endpoint {
                    Some(e) => (url::Url::parse(e).ok(), Endpoint::IdentityEndpoint),
                    None => (
                        url::Url::parse("http://169.254.169.254/metadata/identity/oauth2/token")
                            .ok(),
                        Endpoint::Imds,
                    ),
                };
                (
                    url.map(|u| (u, kind)),
                    or_env(client_id, &env.client_id),
                    String::new(),
                )
            }
            I::WorkloadIdentity {
                client_id,
                tenant_id,
                ..
            } => {
                let tenant = or_env(tenant_id, &env.tenant_id);
                let url = entra(&tenant).map(|u| (u, Endpoint::Entra));
                (url, or_env(client_id, &env.client_id), tenant)
            }
            I::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => (
                entra(tenant_id).map(|u| (u, Endpoint::Entra)),
                client_id.clone(),
                tenant_id.clone(),
            ),
            I::Auto { .. } | I::AzureCli { .. } => (None, String::new(), String::new()),
        };
        let endpoint = match (&config.emulator, endpoint) {
            (Some(emulator), Some((url, _))) => Some((
                crate::config::redirect(&url, Some(emulator)),
                Endpoint::Emulator,
            )),
            (_, endpoint) => endpoint,
        };
        IdentityProbe {
            endpoint,
            timeout: config.upstream.identity_timeout.min(Duration::from_secs(5)),
            tried: tokio::sync::OnceCell::new(),
            client_id,
            tenant,
        }
    }

    /// Why the identity endpoint cannot be reached (the cause and the fix), if it cannot.
    async fn unreachable(&self, http: &reqwest::Client) -> Option<String> {
        let (url, kind) = self.endpoint.as_ref()?;
        self.tried
            .get_or_init(|| async {
                reach::probe(url, self.timeout, http)
                    .await
                    .err()
                    .map(|cause| format!("{}; fix: {}", cause.cause(), cause.fix(*kind)))
            })
            .await
            .clone()
    }

    /// The root cause of a failed token request, and its fix.
    fn explain(&self, e: &IdentityError, config: &Config) -> String {
        let kind = self.endpoint.as_ref().map(|(_, k)| *k);
        let at = self.endpoint.as_ref().map_or_else(
            || "the identity provider".to_string(),
            |(u, _)| {
                format!(
                    "{}:{}",
                    u.host_str().unwrap_or_default(),
                    u.port_or_known_default().unwrap_or(443)
                )
            },
        );
        let secs = config.upstream.identity_timeout.as_secs_f64();
        if let Some(code) = e.aadsts() {
            let fix = aadsts_fix(code, &self.client_id, &self.tenant);
            return format!("Entra refused with AADSTS{code}; fix: {fix}");
        }
        match e {
            IdentityError::Timeout { credential, secs } => format!(
                "timeout: {credential} gave no token within {secs}s (upstream.identity_timeout_secs); fix: {}",
                timeout_fix(kind)
            ),
            IdentityError::Failed { reason, .. } | IdentityError::Unavailable { reason, .. } => {
                match (reach::cause_in_text(&at, secs, reason), kind) {
                    (Some(cause), Some(kind)) => {
                        format!("{}; fix: {}", cause.cause(), cause.fix(kind))
                    }
                    _ => format!("{e}; fix: {}", kind_fix(config)),
                }
            }
        }
    }
}

/// What to do when the identity endpoint took the connection but sent no token in time.
fn timeout_fix(kind: Option<Endpoint>) -> &'static str {
    match kind {
        Some(Endpoint::Imds) => {
            "IMDS took the connection but sent no token: check that an identity is assigned to this VM or node (on AKS, use workload identity); the first token after assigning one can take a minute"
        }
        Some(Endpoint::IdentityEndpoint) => {
            "the managed-identity endpoint sent no token: check the app's identity is on, and retry"
        }
        Some(Endpoint::Emulator) => "the emulator did not answer: check it is running",
        Some(Endpoint::Entra) => {
            "Entra ID did not answer in time: check the outbound proxy or firewall; on a slow network raise upstream.identity_timeout_secs"
        }
        Some(Endpoint::Backend) | None => {
            "retry; on a slow network raise upstream.identity_timeout_secs"
        }
    }
}

/// The usual fix for the configured kind of identity when its error names no known cause.
fn kind_fix(config: &Config) -> &'static str {
    use crate::config::IdentityConfig as I;
    match &config.identity {
        I::AzureCli { .. } => {
            "install the Azure CLI and run `az login` as the user the proxy runs as"
        }
        I::ManagedIdentity { .. } => {
            "check that a managed identity is assigned (and client_id names it, for a user-assigned one)"
        }
        I::WorkloadIdentity { .. } => {
            "check the pod's service account annotation, the label azure.workload.identity/use: \"true\", and the federated credential"
        }
        I::ClientSecret { .. } => "check the tenant, client id and secret",
        I::Auto { .. } => "set [identity] kind to the credential you mean, so its own error shows",
    }
}

/// The fix for an `AADSTS` error the proxy's own identity got.
fn aadsts_fix(code: u32, client_id: &str, tenant: &str) -> String {
    match code {
        500011 => format!(
            "the scope's resource is not known in tenant {tenant}: check the backend's scope (and [azure] cloud)"
        ),
        70021 | 700213 => format!(
            "no federated credential of app {client_id} matches the token presented: add one whose issuer is the cluster's OIDC issuer URL and whose subject is system:serviceaccount:NAMESPACE:SERVICE_ACCOUNT"
        ),
        700024 => {
            "the client assertion is not within its valid time range: the projected token file is stale, or this machine's clock is off".to_string()
        }
        53003 => format!(
            "Conditional Access blocked the sign-in of app {client_id}: exclude it (or this network location) from the policy"
        ),
        7000112 => format!(
            "app {client_id} is disabled in tenant {tenant}: enable it (Enterprise applications > Properties)"
        ),
        other => crate::identity::aadsts_fix(other, client_id, tenant),
    }
}

/// The deployments the resource itself lists (`GET /openai/deployments`, answered by the data
/// plane for the API versions that still have it); `None` when it does not answer with a list.
async fn azure_deployments(
    http: &reqwest::Client,
    b: &Backend,
    bearer: &str,
) -> Option<Vec<String>> {
    let mut url = b.endpoint.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().extend(["openai", "deployments"]);
    }
    url.query_pairs_mut()
        .append_pair("api-version", LIST_DEPLOYMENTS_API_VERSION);
    let resp = http
        .get(url)
        .header("authorization", bearer)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    let names = v
        .get("data")?
        .as_array()?
        .iter()
        .filter_map(|d| d.get("id").and_then(serde_json::Value::as_str))
        .map(str::to_string)
        .collect();
    Some(names)
}

fn mentions_auth(body: &[u8]) -> bool {
    let s = String::from_utf8_lossy(body).to_ascii_lowercase();
    s.contains("authentication key") || s.contains("api-version") || s.contains("api version")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Private (RFC 1918 / ULA) or loopback addresses: what a private endpoint resolves to.
pub fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        assert!(is_private(&"10.1.2.3".parse().unwrap()));
        assert!(is_private(&"172.16.0.5".parse().unwrap()));
        assert!(is_private(&"192.168.1.1".parse().unwrap()));
        assert!(is_private(&"127.0.0.1".parse().unwrap()));
        assert!(is_private(&"fd00::1".parse().unwrap()));
        assert!(!is_private(&"20.42.0.1".parse().unwrap()));
        assert!(!is_private(&"2603:1030::1".parse().unwrap()));
    }
}
