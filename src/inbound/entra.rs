//! Entra ID bearer tokens from callers: signature against the tenant's JWKS (cached, refetched
//! on an unknown `kid` at most once a minute), issuer, tenant, lifetime and audience, each
//! failure named precisely.

use crate::claims::{self, Claims};
use crate::cloud::{self, Cloud};
use crate::config::{Config, EntraInbound};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECS: i64 = 60;
/// Unknown `kid`s trigger a JWKS refetch at most this often per tenant.
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Verified tokens remembered (by digest) to skip repeat signature checks.
const VERIFIED_CACHE_ENTRIES: u64 = 10_000;
/// How long a verified token is remembered; a rotated-away signing key stops counting then.
const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);
/// JWKS are re-read after this long even when every `kid` is known.
pub(crate) const JWKS_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a caller's token was refused. Messages name what the token holds and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token is signed with {0}; Entra access tokens use RS256")]
    UnsupportedAlgorithm(String),
    #[error("token has no tid (tenant) claim; it is not an Entra ID access token")]
    NoTenant,
    #[error("token is from tenant {has}, which this proxy does not accept (allowed: {allowed})")]
    WrongTenant { has: String, allowed: String },
    #[error(
        "token issuer {iss:?} is not an Entra ID issuer for tenant {tid} (expected {v1} or {v2})"
    )]
    BadIssuer {
        iss: String,
        tid: String,
        v1: String,
        v2: String,
    },
    #[error(
        "token signing key {kid:?} is not in tenant {tid}'s published keys (JWKS fetched {fetched_secs_ago}s ago); the token was not issued by Entra for this tenant, or the keys rotated very recently"
    )]
    UnknownKey {
        kid: String,
        tid: String,
        fetched_secs_ago: u64,
    },
    #[error("token signature is invalid: it was altered or not signed by Entra")]
    BadSignature,
    #[error("token expired at {at} ({ago} ago); get a new token")]
    Expired { at: String, ago: String },
    #[error("token is not valid before {at} (in {in_}); check the caller's clock")]
    NotYetValid { at: String, in_: String },
    #[error(
        "token audience is {has}, but this proxy accepts {accepted}; request a token for scope {scope}"
    )]
    WrongAudience {
        has: String,
        accepted: String,
        scope: String,
    },
}

impl TokenRejection {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TokenRejection::Malformed(_) => "token_malformed",
            TokenRejection::UnsupportedAlgorithm(_) => "token_bad_algorithm",
            TokenRejection::NoTenant => "token_no_tenant",
            TokenRejection::WrongTenant { .. } => "token_wrong_tenant",
            TokenRejection::BadIssuer { .. } => "token_bad_issuer",
            TokenRejection::UnknownKey { .. } => "token_unknown_kid",
            TokenRejection::BadSignature => "token_bad_signature",
            TokenRejection::Expired { .. } => "token_expired",
            TokenRejection::NotYetValid { .. } => "token_not_yet_valid",
            TokenRejection::WrongAudience { .. } => "token_wrong_audience",
        }
    }
}

/// What to do with a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraUse {
    /// Minted for an Azure AI audience: forward it as it is.
    Passthrough,
    /// Minted for the proxy itself: swap it for the proxy's own token.
    Swap,
    /// Minted for the proxy itself, for a signed-in user: exchange it for the user's own token
    /// for the backend (on-behalf-of).
    OnBehalfOf,
}

impl EntraUse {
    /// What a token validated for `self` becomes under an identity's `upstream`.
    pub fn under(self, upstream: crate::config::Upstream) -> EntraUse {
        use crate::config::Upstream;
        match (upstream, self) {
            (Upstream::ByAudience, use_) => use_,
            (Upstream::Proxy, _) => EntraUse::Swap,
            (Upstream::Caller, _) => EntraUse::Passthrough,
            // A token already for Azure carries the user to Azure as it is: nothing to exchange.
            (Upstream::OnBehalfOf, EntraUse::Passthrough) => EntraUse::Passthrough,
            (Upstream::OnBehalfOf, _) => EntraUse::OnBehalfOf,
        }
    }
}

/// A token's signing keys could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot fetch signing keys for tenant {tenant}: {reason}")]
pub struct KeysUnavailable {
    pub tenant: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EntraError {
    #[error(transparent)]
    Rejected(#[from] TokenRejection),
    #[error(transparent)]
    KeysUnavailable(#[from] KeysUnavailable),
}

struct Jwks {
    keys: HashMap<String, DecodingKey>,
    fetched: Instant,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Validates Entra tokens for the configured tenants.
#[derive(Debug)]
pub struct EntraValidator {
    config: EntraInbound,
    cloud: Cloud,
    emulator: Option<Url>,
    http: reqwest::Client,
    jwks: moka::future::Cache<String, Arc<Jwks>>,
    last_refetch: Mutex<HashMap<String, Instant>>,
    /// Tokens whose signature, issuer and tenant were already checked, by SHA-256 of the
    /// token: a repeat caller costs a hash instead of an RSA verification. Lifetime and
    /// audience are still checked on every request.
    verified: moka::future::Cache<[u8; 32], Arc<Claims>>,
}

#[derive(serde::Deserialize)]
struct OidcMetadata {
    jwks_uri: String,
}

#[derive(serde::Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(serde::Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

impl EntraValidator {
    pub fn new(config: &Config, entra: &EntraInbound) -> Result<EntraValidator, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("inbound.entra: cannot build the HTTP client: {e}"))?;
        Ok(EntraValidator {
            config: entra.clone(),
            cloud: config.cloud,
            emulator: config.emulator.clone(),
            http,
            jwks: moka::future::Cache::builder()
                .max_capacity(64)
                .time_to_live(JWKS_TTL)
                .build(),
            last_refetch: Mutex::new(HashMap::new()),
            verified: moka::future::Cache::builder()
                .max_capacity(VERIFIED_CACHE_ENTRIES)
                .time_to_live(VERIFIED_CACHE_TTL)
                .build(),
        })
    }

    /// Validates `token` and says whether to pass it through or swap it.
    pub async fn validate(&self, token: &str) -> Result<(Claims, EntraUse), EntraError> {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(c) = self.verified.get(&digest).await {
            check_lifetime(&c, unix_now())?;
            let use_ = self.audience_use(&c)?;
            return Ok(((*c).clone(), use_));
        }
        let (c, use_) = self.validate_uncached(token).await?;
        self.verified.insert(digest, Arc::new(c.clone())).await;
        Ok((c, use_))
    }

    async fn validate_uncached(&self, token: &str) -> Result<(Claims, EntraUse), EntraError> {
        let decoded = claims::decode_unverified(token)
            .map_err(|e| TokenRejection::Malformed(e.to_string()))?;
        if decoded.header.alg != "RS256" {
            return Err(TokenRejection::UnsupportedAlgorithm(decoded.header.alg).into());
        }
        let c = decoded.claims;
        let tid = c
            .tid
            .clone()
            .ok_or(TokenRejection::NoTenant)?
            .to_ascii_lowercase();
        if !self.config.tenants.contains(&tid) {
            return Err(TokenRejection::WrongTenant {
                has: tid,
                allowed: self.config.tenants.join(", "),
            }
            .into());
        }
        let v1 = format!("{}/{tid}/", self.cloud.v1_issuer_host());
        let v2 = format!("{}/{tid}/v2.0", self.cloud.authority_host());
        let iss = c.iss.clone().unwrap_or_default();
        if !iss.eq_ignore_ascii_case(&v1) && !iss.eq_ignore_ascii_case(&v2) {
            return Err(TokenRejection::BadIssuer { iss, tid, v1, v2 }.into());
        }
        let kid = decoded
            .header
            .kid
            .ok_or_else(|| TokenRejection::Malformed("the header has no kid".into()))?;
        let key = self.key_for(&tid, &kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenRejection::BadSignature,
            _ => TokenRejection::Malformed(e.to_string()),
        })?;
        check_lifetime(&c, unix_now())?;
        let use_ = self.audience_use(&c)?;
        Ok((c, use_))
    }

    fn audience_use(&self, c: &Claims) -> Result<EntraUse, TokenRejection> {
        audience_use(&self.config, self.cloud, c)
    }

    async fn key_for(&self, tid: &str, kid: &str) -> Result<DecodingKey, EntraError> {
        let jwks = self.fetch(tid).await?;
        if let Some(k) = jwks.keys.get(kid) {
            return Ok(k.clone());
        }
        let may_refetch = {
            let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let recent = last
                .get(tid)
                .is_some_and(|t| now.duration_since(*t) < REFETCH_INTERVAL)
                || now.duration_since(jwks.fetched) < Duration::from_secs(1);
            if !recent {
                last.insert(tid.to_string(), now);
            }
            !recent
        };
        let jwks = if may_refetch {
            tracing::info!(tenant = tid, kid, "unknown signing key: refetching JWKS");
            self.jwks.invalidate(tid).await;
            self.fetch(tid).await?
        } else {
            jwks
        };
        jwks.keys.get(kid).cloned().ok_or_else(|| {
            TokenRejection::UnknownKey {
                kid: kid.to_string(),
                tid: tid.to_string(),
                fetched_secs_ago: jwks.fetched.elapsed().as_secs(),
            }
            .into()
        })
    }

    async fn fetch(&self, tid: &str) -> Result<Arc<Jwks>, KeysUnavailable> {
        self.jwks
            .try_get_with_by_ref(tid, self.load(tid))
            .await
            .map_err(|e: Arc<KeysUnavailable>| (*e).clone())
    }

    async fn load(&self, tid: &str) -> Result<Arc<Jwks>, KeysUnavailable> {
        let fail = |reason: String| KeysUnavailable {
            tenant: tid.to_string(),
            reason,
        };
        let jwks_url = match &self.config.jwks_url {
            Some(u) => u.clone(),
            None => {
                let meta_url = Url::parse(&format!(
                    "{}/{tid}/v2.0/.well-known/openid-configuration",
                    self.cloud.authority_host()
                ))
                .map_err(|e| fail(e.to_string()))?;
                let meta: OidcMetadata = self.get_json(&meta_url).await.map_err(fail)?;
                Url::parse(&meta.jwks_uri)
                    .map_err(|e| fail(format!("OIDC metadata has a bad jwks_uri: {e}")))?
            }
        };
        let set: JwkSet = self.get_json(&jwks_url).await.map_err(fail)?;
        let mut keys = HashMap::new();
        for k in set.keys {
            if let (Some(kid), "RSA", Some(n), Some(e)) = (k.kid, k.kty.as_str(), k.n, k.e)
                && let Ok(key) = DecodingKey::from_rsa_components(&n, &e)
            {
                keys.insert(kid, key);
            }
        }
        if keys.is_empty() {
            return Err(fail(format!("{jwks_url} has no usable RSA keys")));
        }
        tracing::debug!(tenant = tid, keys = keys.len(), "fetched JWKS");
        Ok(Arc::new(Jwks {
            keys,
            fetched: Instant::now(),
        }))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> Result<T, String> {
        let target = crate::config::redirect(url, self.emulator.as_ref());
        let r = self
            .http
            .get(target)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", r.status().as_u16()));
        }
        r.json::<T>()
            .await
            .map_err(|e| format!("GET {url}: not the expected JSON: {e}"))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// An Entra bearer token: validated (signature, issuer, audience, lifetime), the caller it
/// names, or why not.
pub(super) async fn authenticate(
    validator: &EntraValidator,
    identities: &super::Identities,
    token: &str,
) -> Result<super::Caller, super::AuthError> {
    use super::{AuthError, Caller, CallerLabel, Held, Principal};
    let (claims, use_) = validator.validate(token).await.map_err(|e| match e {
        EntraError::Rejected(r) => AuthError::TokenRejected(r),
        EntraError::KeysUnavailable(k) => AuthError::SigningKeysUnavailable(k),
    })?;
    let claims = std::sync::Arc::new(claims);
    let principal = Principal::of_claims(&claims);
    let held = Held::Entra {
        claims: claims.clone(),
        use_,
        token: secrecy::SecretString::from(token.to_string()),
    };
    Caller::identified(identities, &principal, CallerLabel::Entra, held)
}

/// "3 min", "2 h 5 min", "40 s".
pub fn human_duration(secs: i64) -> String {
    let s = secs.unsigned_abs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// `exp` and `nbf`, with `LEEWAY_SECS` of clock skew.
pub fn check_lifetime(c: &Claims, now: i64) -> Result<(), TokenRejection> {
    let exp = c
        .exp
        .ok_or_else(|| TokenRejection::Malformed("the token has no exp claim".into()))?;
    // Saturating: `exp` and `nbf` are whatever the token says, up to i64::MAX.
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenRejection::Expired {
            at: rfc3339(exp),
            ago: human_duration(now.saturating_sub(exp)),
        });
    }
    if let Some(nbf) = c.nbf
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(TokenRejection::NotYetValid {
            at: rfc3339(nbf),
            in_: human_duration(nbf.saturating_sub(now)),
        });
    }
    Ok(())
}

/// What a token of these claims is for at this proxy, by its audience: forwarded (an Azure AI
/// audience, with passthrough on), the proxy's own (one of `audiences`), or refused naming
/// what is accepted. Signature, tenant and lifetime are checked elsewhere.
pub fn audience_use(
    config: &EntraInbound,
    cloud: Cloud,
    c: &Claims,
) -> Result<EntraUse, TokenRejection> {
    let auds: Vec<&str> = c.aud.as_ref().map(|a| a.values()).unwrap_or_default();
    let azure_ai = [cloud.cognitive_audience(), cloud.foundry_audience()];
    if config.passthrough
        && auds
            .iter()
            .any(|a| azure_ai.iter().any(|x| cloud::same_audience(a, x)))
    {
        return Ok(EntraUse::Passthrough);
    }
    if auds
        .iter()
        .any(|a| config.audiences.iter().any(|x| cloud::same_audience(a, x)))
    {
        return Ok(EntraUse::Swap);
    }
    let mut accepted = Vec::new();
    if config.passthrough {
        accepted.push(format!("{} (forwarded as is)", cloud.cognitive_audience()));
    }
    for a in &config.audiences {
        accepted.push(format!("{a} (minted for the proxy)"));
    }
    if accepted.is_empty() {
        accepted
            .push("no audience (passthrough is off and inbound.entra.audiences is empty)".into());
    }
    Err(TokenRejection::WrongAudience {
        has: if auds.is_empty() {
            "missing".into()
        } else {
            auds.join(", ")
        },
        accepted: accepted.join(" or "),
        scope: cloud::scope_for_audience(cloud.cognitive_audience()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_checks_name_when() {
        let c = Claims {
            exp: Some(1_000),
            nbf: Some(0),
            ..Claims::default()
        };
        assert!(check_lifetime(&c, 1_000 + LEEWAY_SECS).is_ok());
        let e = check_lifetime(&c, 1_000 + 3_600).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token expired at 1970-01-01T00:16:40Z (60 min ago); get a new token"
        );
        let c = Claims {
            exp: Some(10_000),
            nbf: Some(5_000),
            ..Claims::default()
        };
        let e = check_lifetime(&c, 1_000).unwrap_err();
        assert!(e.to_string().contains("not valid before"), "{e}");
        assert!(check_lifetime(&Claims::default(), 0).is_err());
    }

    #[test]
    fn human_durations_read_well() {
        assert_eq!(human_duration(5), "5 s");
        assert_eq!(human_duration(300), "5 min");
        assert_eq!(human_duration(-7260), "2 h 1 min");
    }
}
