//! The on-behalf-of exchange: a signed-in user's token for the proxy traded at Entra for a
//! token for the backend's scope that carries the user's own identity (the jwt-bearer grant with
//! `requested_token_use=on_behalf_of`). The proxy proves it is its app registration with a
//! client secret, a certificate assertion, or — with no secret at all — a token of its own
//! managed or workload identity for `api://AzureADTokenExchange`, which the app trusts as a
//! federated credential. Delegated tokens are cached per (tenant, user, scope) until a margin
//! before they expire, bounded in number; concurrent first requests of one user share one
//! exchange. Entra's refusals become errors a user or an operator can act on.

use super::cache::{expiry_margin, refresh_at};
use super::{AccessToken, CachedToken, TokenCache};
use crate::claims::Claims;
use crate::cloud::Cloud;
use crate::config::{AppProof, OnBehalfOf, Scope, redirect};
use secrecy::{ExposeSecret as _, SecretString};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// Failures kept for `/status`.
const FAILURES_KEPT: usize = 20;

/// Delegated tokens and the exchange that makes them (cheap to clone).
#[derive(Clone)]
pub struct OboTokens {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OnBehalfOf,
    cloud: Cloud,
    emulator: Option<Url>,
    http: reqwest::Client,
    cache: moka::future::Cache<OboKey, Arc<CachedToken>>,
    /// The proxy's own tokens: the federated assertion of a managed or workload identity.
    own: TokenCache,
    results: Results,
    failures: Mutex<std::collections::VecDeque<OboFailure>>,
}

/// Whose delegated token for which scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct OboKey {
    tenant: Arc<str>,
    oid: Arc<str>,
    scope: Scope,
}

/// `entra_proxy_obo_exchanges_total{result}`, by result.
struct Results {
    ok: Tally,
    consent_required: Tally,
    interaction_required: Tally,
    assertion_rejected: Tally,
    client_rejected: Tally,
    unavailable: Tally,
    cached_users: metrics::Gauge,
}

/// One result's count: in `/metrics`, and read back for `/status`.
struct Tally {
    counter: metrics::Counter,
    count: std::sync::atomic::AtomicU64,
}

impl Tally {
    fn new(result: &'static str) -> Tally {
        Tally {
            counter: metrics::counter!("entra_proxy_obo_exchanges_total", "result" => result),
            count: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn increment(&self, n: u64) {
        self.counter.increment(n);
        self.count
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One failed exchange, as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OboFailure {
    /// Unix seconds.
    pub at: i64,
    /// The error code the caller got (`obo_consent_required`, …).
    pub code: &'static str,
    /// Entra's `AADSTS` code, when it gave one.
    pub aadsts: Option<u32>,
    /// The user's object id (an id, not a secret).
    pub oid: String,
}

/// What `/status` shows of the exchange.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OboStatus {
    pub client_id: String,
    pub credential: &'static str,
    pub cached_users: u64,
    /// Exchanges since start, by result (`ok`, `consent_required`, …).
    pub exchanges: Vec<(&'static str, u64)>,
    pub last_failures: Vec<OboFailure>,
}

/// Why a user's token could not be exchanged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OboError {
    #[error(
        "the user has not consented to the proxy's app {client_id} using Microsoft Cognitive Services for them (AADSTS65001): grant the delegated permission user_impersonation on Microsoft Cognitive Services to the app, or have an administrator grant it for the tenant at {consent_url}"
    )]
    ConsentRequired {
        client_id: String,
        consent_url: String,
    },
    #[error(
        "Entra requires the user to sign in again and satisfy a Conditional Access policy (AADSTS{code}: {reason}); the client should acquire a new token with the claims challenge in WWW-Authenticate"
    )]
    InteractionRequired {
        code: u32,
        reason: String,
        /// Entra's claims challenge, as JSON, to hand back to the client.
        claims: Option<String>,
    },
    #[error(
        "Entra refused the caller's token for the on-behalf-of exchange (AADSTS{code}): {reason}"
    )]
    AssertionRejected { code: u32, reason: String },
    #[error("Entra refused the proxy's app {client_id} (AADSTS{code}): {fix} (setting: {setting})")]
    ClientRejected {
        code: u32,
        client_id: String,
        setting: &'static str,
        fix: String,
    },
    #[error("the on-behalf-of exchange at Entra failed: {reason}")]
    Unavailable { reason: String },
    #[error(
        "the caller's token has no {claim} claim, so there is no user to act on behalf of; on-behalf-of needs a signed-in user's token"
    )]
    NoUser { claim: &'static str },
}

/// Entra's error answer, as far as it is read.
#[derive(Debug, Default, serde::Deserialize)]
struct EntraError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u32>,
    claims: Option<String>,
}

/// Entra's answer to a successful exchange.
#[derive(serde::Deserialize)]
struct Granted {
    access_token: SecretString,
    expires_in: Option<u64>,
}

impl std::fmt::Debug for OboTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OboTokens")
            .field("client_id", &self.inner.settings.client_id)
            .field("credential", &self.inner.settings.proof.name())
            .finish_non_exhaustive()
    }
}

/// Keeps each delegated token until the margin before its expiry.
struct UntilExpiry;

impl moka::Expiry<OboKey, Arc<CachedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &OboKey,
        token: &Arc<CachedToken>,
        _: Instant,
    ) -> Option<Duration> {
        let t = &token.token;
        let margin = expiry_margin(t.acquired_at, t.expires_at);
        Some(
            t.expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(margin),
        )
    }
}

impl OboTokens {
    /// The exchange of `settings`, reaching Entra of `cloud` (or the emulator), with the proxy's
    /// own tokens `own` for a federated assertion.
    pub fn new(
        settings: &OnBehalfOf,
        cloud: Cloud,
        emulator: Option<Url>,
        own: TokenCache,
        timeout: Duration,
    ) -> Result<OboTokens, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("on_behalf_of: cannot build the HTTP client: {e}"))?;
        let result = Tally::new;
        Ok(OboTokens {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                cloud,
                emulator,
                http,
                cache: moka::future::Cache::builder()
                    .max_capacity(settings.max_users)
                    .expire_after(UntilExpiry)
                    .build(),
                own,
                results: Results {
                    ok: result("ok"),
                    consent_required: result("consent_required"),
                    interaction_required: result("interaction_required"),
                    assertion_rejected: result("assertion_rejected"),
                    client_rejected: result("client_rejected"),
                    unavailable: result("unavailable"),
                    cached_users: metrics::gauge!("entra_proxy_obo_cached_users"),
                },
                failures: Mutex::default(),
            }),
        })
    }

    /// The user's delegated token for `scope`: cached, or exchanged for the caller's `token`
    /// (whose verified claims are `claims`); concurrent first requests share one exchange.
    pub async fn token(
        &self,
        claims: &Claims,
        assertion: &SecretString,
        scope: &Scope,
    ) -> Result<(Arc<CachedToken>, super::Lookup), OboError> {
        let oid = claims
            .oid
            .as_deref()
            .ok_or(OboError::NoUser { claim: "oid" })?;
        let tenant = claims
            .tid
            .as_deref()
            .ok_or(OboError::NoUser { claim: "tid" })?;
        // An app's own token (client credentials, a managed identity) has no delegated scopes:
        // there is no user, and Entra would refuse the exchange.
        if claims.scp.is_none() {
            return Err(OboError::NoUser { claim: "scp" });
        }
        let key = OboKey {
            tenant: Arc::from(tenant),
            oid: Arc::from(oid),
            scope: scope.clone(),
        };
        let exchanged = std::sync::atomic::AtomicBool::new(false);
        let found = self
            .inner
            .cache
            .try_get_with_by_ref(&key, async {
                exchanged.store(true, std::sync::atomic::Ordering::Relaxed);
                self.exchange(tenant, assertion, scope).await.map(Arc::new)
            })
            .await;
        self.inner
            .results
            .cached_users
            .set(self.inner.cache.entry_count() as f64);
        let lookup = match exchanged.load(std::sync::atomic::Ordering::Relaxed) {
            true => super::Lookup::Acquired,
            false => super::Lookup::Cached,
        };
        match found {
            Ok(token) => Ok((token, lookup)),
            Err(e) => {
                let e = (*e).clone();
                self.record_failure(&e, oid);
                Err(e)
            }
        }
    }

    /// Forgets a delegated token Azure refused, so the next request exchanges again.
    pub async fn invalidate(&self, claims: &Claims, scope: &Scope) {
        if let (Some(oid), Some(tid)) = (claims.oid.as_deref(), claims.tid.as_deref()) {
            let key = OboKey {
                tenant: Arc::from(tid),
                oid: Arc::from(oid),
                scope: scope.clone(),
            };
            self.inner.cache.invalidate(&key).await;
        }
    }

    /// What `/status` shows.
    pub fn status(&self) -> OboStatus {
        OboStatus {
            client_id: self.inner.settings.client_id.clone(),
            credential: self.inner.settings.proof.name(),
            cached_users: self.inner.cache.entry_count(),
            exchanges: {
                let r = &self.inner.results;
                vec![
                    ("ok", r.ok.get()),
                    ("consent_required", r.consent_required.get()),
                    ("interaction_required", r.interaction_required.get()),
                    ("assertion_rejected", r.assertion_rejected.get()),
                    ("client_rejected", r.client_rejected.get()),
                    ("unavailable", r.unavailable.get()),
                ]
            },
            last_failures: self
                .inner
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .rev()
                .cloned()
                .collect(),
        }
    }

    /// The `[on_behalf_of]` section this exchange was built from.
    pub fn settings(&self) -> &OnBehalfOf {
        &self.inner.settings
    }

    /// How the proxy proves it is its app, in words (`explain`, traces).
    pub fn describe(&self) -> String {
        self.inner.settings.describe()
    }

    /// One exchange at Entra.
    async fn exchange(
        &self,
        tenant: &str,
        assertion: &SecretString,
        scope: &Scope,
    ) -> Result<CachedToken, OboError> {
        let settings = &self.inner.settings;
        let token_url = format!(
            "{}/{tenant}/oauth2/v2.0/token",
            self.inner.cloud.authority_host()
        );
        let mut form: Vec<(&str, String)> = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
            ),
            ("requested_token_use", "on_behalf_of".into()),
            ("client_id", settings.client_id.clone()),
            ("scope", scope.to_string()),
            ("assertion", assertion.expose_secret().to_string()),
        ];
        self.prove(&token_url, &mut form).await?;
        let url = Url::parse(&token_url)
            .map(|u| redirect(&u, self.inner.emulator.as_ref()))
            .map_err(|e| OboError::Unavailable {
                reason: format!("the token endpoint is not a URL: {e}"),
            })?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        drop(form);
        let sent = self
            .inner
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await;
        let answer = sent.map_err(|e| {
            self.inner.results.unavailable.increment(1);
            OboError::Unavailable {
                reason: if e.is_timeout() {
                    "no answer in time (upstream.identity_timeout_secs)".into()
                } else {
                    format!("cannot reach Entra ({})", super::root_reason(&e))
                },
            }
        })?;
        self.read_answer(answer).await
    }

    /// Adds the app's proof to the form: its secret, or a client assertion.
    async fn prove(&self, token_url: &str, form: &mut Vec<(&str, String)>) -> Result<(), OboError> {
        let settings = &self.inner.settings;
        let assertion = match &settings.proof {
            AppProof::ClientSecret(secret) => {
                form.push(("client_secret", secret.expose_secret().to_string()));
                return Ok(());
            }
            AppProof::Certificate(cert) => cert
                .client_assertion(&settings.client_id, token_url, now())
                .map_err(|reason| OboError::Unavailable { reason })?,
            AppProof::ManagedIdentity | AppProof::WorkloadIdentity => {
                let scope = Scope::token_exchange(self.inner.cloud);
                let (token, _) = self.inner.own.lookup(&scope).await.map_err(|e| {
                    self.inner.results.client_rejected.increment(1);
                    OboError::ClientRejected {
                        code: e.aadsts().unwrap_or(0),
                        client_id: settings.client_id.clone(),
                        setting: "on_behalf_of.credential",
                        fix: format!(
                            "the proxy's own identity could not get a token for {} to prove the app: {e}",
                            scope.audience()
                        ),
                    }
                })?;
                token.token.secret.expose_secret().to_string()
            }
        };
        form.push((
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ));
        form.push(("client_assertion", assertion));
        Ok(())
    }

    /// Entra's answer: the delegated token, or the error for what it refused.
    async fn read_answer(&self, answer: reqwest::Response) -> Result<CachedToken, OboError> {
        let status = answer.status();
        let body = answer.bytes().await.unwrap_or_default();
        if status.is_success() {
            let granted: Granted = serde_json::from_slice(&body).map_err(|_| {
                self.inner.results.unavailable.increment(1);
                OboError::Unavailable {
                    reason: format!(
                        "Entra answered {status} with a body that is not a token answer"
                    ),
                }
            })?;
            self.inner.results.ok.increment(1);
            return cached(granted);
        }
        let error: EntraError = serde_json::from_slice(&body).unwrap_or_default();
        Err(self.classify(status.as_u16(), error))
    }

    /// The error for Entra's refusal, counted by result.
    fn classify(&self, status: u16, e: EntraError) -> OboError {
        let results = &self.inner.results;
        let settings = &self.inner.settings;
        let code = e
            .error_codes
            .first()
            .copied()
            .or_else(|| super::parse_aadsts(&e.error_description))
            .unwrap_or(0);
        let reason = first_sentence(&e.error_description);
        match code {
            65001 => {
                results.consent_required.increment(1);
                OboError::ConsentRequired {
                    client_id: settings.client_id.clone(),
                    consent_url: format!(
                        "{}/{}/adminconsent?client_id={}",
                        self.inner.cloud.authority_host(),
                        settings.tenant_id,
                        settings.client_id
                    ),
                }
            }
            50076 | 50079 | 50158 | 53003 => {
                results.interaction_required.increment(1);
                OboError::InteractionRequired {
                    code,
                    reason,
                    claims: e.claims,
                }
            }
            _ if e.error == "interaction_required" => {
                results.interaction_required.increment(1);
                OboError::InteractionRequired {
                    code,
                    reason,
                    claims: e.claims,
                }
            }
            50013 | 50027 | 500131 | 500133 | 7000114 => {
                results.assertion_rejected.increment(1);
                OboError::AssertionRejected { code, reason }
            }
            _ if e.error == "invalid_client"
                || e.error == "unauthorized_client"
                || status == 401 =>
            {
                results.client_rejected.increment(1);
                self.client_rejected(code, reason)
            }
            _ if status >= 500 => {
                results.unavailable.increment(1);
                OboError::Unavailable {
                    reason: format!("Entra answered {status}: {reason}"),
                }
            }
            _ => {
                results.client_rejected.increment(1);
                self.client_rejected(code, reason)
            }
        }
    }

    /// A refusal of the proxy's own app: the setting at fault and its fix.
    fn client_rejected(&self, code: u32, reason: String) -> OboError {
        let settings = &self.inner.settings;
        let federated = format!(
            "{reason}; add a federated credential to app {} whose issuer and subject are the proxy's own {} (for a managed identity: issuer {}/{}/v2.0, subject its object id), audience {}",
            settings.client_id,
            settings.proof.name(),
            self.inner.cloud.authority_host(),
            settings.tenant_id,
            self.inner.cloud.token_exchange_audience()
        );
        let (setting, fix) = match (code, &settings.proof) {
            (700016 | 7000218, _) => (
                "on_behalf_of.client_id",
                format!(
                    "{reason}; check the app's client id and tenant ({})",
                    settings.tenant_id
                ),
            ),
            (700022 | 70011, _) => (
                "backends[].scope",
                format!("{reason}; the backend's scope must be one resource's /.default scope"),
            ),
            (_, AppProof::ClientSecret(_)) => (
                "on_behalf_of.client_secret",
                format!(
                    "{reason}; set the secret's Value (not its id) of app {}, or create a new one with `az ad app credential reset --id {}`",
                    settings.client_id, settings.client_id
                ),
            ),
            (_, AppProof::Certificate(_)) => (
                "on_behalf_of.certificate_file",
                format!(
                    "{reason}; upload this certificate to app {} (Certificates & secrets) or point certificate_file at the one it has",
                    settings.client_id
                ),
            ),
            (_, AppProof::ManagedIdentity | AppProof::WorkloadIdentity) => {
                ("on_behalf_of.credential", federated)
            }
        };
        OboError::ClientRejected {
            code,
            client_id: settings.client_id.clone(),
            setting,
            fix,
        }
    }

    fn record_failure(&self, e: &OboError, oid: &str) {
        let mut failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failures.len() == FAILURES_KEPT {
            failures.pop_front();
        }
        failures.push_back(OboFailure {
            at: now(),
            code: e.code(),
            aadsts: e.aadsts(),
            oid: oid.to_string(),
        });
    }
}

impl OboError {
    /// The status the caller gets: whose move it is. The user's (403 consent, 401 sign in
    /// again or a token Entra would not exchange), the operator's (502, the proxy's app), or
    /// nobody's (503, Entra away).
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            OboError::ConsentRequired { .. } => StatusCode::FORBIDDEN,
            OboError::InteractionRequired { .. }
            | OboError::AssertionRejected { .. }
            | OboError::NoUser { .. } => StatusCode::UNAUTHORIZED,
            OboError::ClientRejected { .. } => StatusCode::BAD_GATEWAY,
            OboError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge a client library acts on: for a Conditional Access
    /// challenge, `insufficient_claims` with Entra's claims (base64), which MSAL passes back to
    /// Entra when it signs the user in again.
    pub fn www_authenticate(&self) -> Option<axum::http::HeaderValue> {
        let OboError::InteractionRequired { claims, .. } = self else {
            return None;
        };
        let value = match claims {
            Some(claims) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
                format!(
                    "Bearer realm=\"entra-proxy\", error=\"insufficient_claims\", error_description=\"the user must sign in again to satisfy a Conditional Access policy\", claims=\"{encoded}\""
                )
            }
            None => "Bearer realm=\"entra-proxy\", error=\"interaction_required\"".to_string(),
        };
        axum::http::HeaderValue::try_from(value).ok()
    }

    /// The error code the caller gets.
    pub fn code(&self) -> &'static str {
        match self {
            OboError::ConsentRequired { .. } => "obo_consent_required",
            OboError::InteractionRequired { .. } => "obo_interaction_required",
            OboError::AssertionRejected { .. } => "obo_token_rejected",
            OboError::ClientRejected { .. } => "obo_app_rejected",
            OboError::Unavailable { .. } => "obo_unavailable",
            OboError::NoUser { .. } => "obo_no_user",
        }
    }

    /// Entra's `AADSTS` code, when it gave one.
    pub fn aadsts(&self) -> Option<u32> {
        match self {
            OboError::ConsentRequired { .. } => Some(65001),
            OboError::InteractionRequired { code, .. }
            | OboError::AssertionRejected { code, .. }
            | OboError::ClientRejected { code, .. } => (*code != 0).then_some(*code),
            OboError::Unavailable { .. } | OboError::NoUser { .. } => None,
        }
    }
}

/// The delegated token of Entra's answer, ready to use.
fn cached(granted: Granted) -> Result<CachedToken, OboError> {
    let now = SystemTime::now();
    let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(3600).max(1));
    let token = AccessToken {
        secret: granted.access_token,
        expires_at: now + lifetime,
        acquired_at: now,
    };
    let mut header =
        axum::http::HeaderValue::try_from(format!("Bearer {}", token.secret.expose_secret()))
            .map_err(|_| OboError::Unavailable {
                reason: "the delegated token has characters not allowed in an HTTP header".into(),
            })?;
    header.set_sensitive(true);
    let claims = crate::claims::decode_unverified(token.secret.expose_secret())
        .ok()
        .map(|u| u.claims);
    Ok(CachedToken {
        refresh_at: refresh_at(token.acquired_at, token.expires_at),
        token,
        header,
        claims,
    })
}

/// The first sentence of Entra's error description (without its trace and correlation ids).
fn first_sentence(description: &str) -> String {
    let line = description.lines().next().unwrap_or_default();
    let line = line.split(" Trace ID:").next().unwrap_or(line);
    line.trim().to_string()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_descriptions_are_cut_to_their_first_sentence() {
        assert_eq!(
            first_sentence(
                "AADSTS65001: The user has not consented. Trace ID: abc Correlation ID: d"
            ),
            "AADSTS65001: The user has not consented."
        );
        assert_eq!(
            first_sentence("AADSTS50076: x\r\nTrace ID: 1"),
            "AADSTS50076: x"
        );
    }
}
