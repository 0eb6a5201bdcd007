//! RSA signing keys, the JWKS that publishes them, and minting and checking Entra-shaped JWTs.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::EmulatorConfig;
use crate::Cloud;
use crate::jwt::Audience;

/// The first key generated in this process, shared by every emulator that starts with it:
/// RSA key generation costs tens of milliseconds, tests start many emulators.
static FIRST_KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();

/// Which Entra token format to mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenVersion {
    /// `ver` 1.0, issuer `https://sts.windows.net/{tid}/`, `appid`: what Cognitive Services issues.
    #[default]
    V1,
    /// `ver` 2.0, issuer `{authority}/{tid}/v2.0`, `azp`.
    V2,
}

/// Entra writes no `groups` claim into a JWT for a user in more than this many groups, but the
/// overage form instead. Source: Microsoft Learn, "Access token claims reference" (`groups`,
/// `groups:src1`) and "How to get the signed-in user group list when a group overage claim is
/// displayed in access tokens" (200 for JWTs).
pub const GROUPS_OVERAGE_LIMIT: usize = 200;

/// What to put in a token minted with [`super::Emulator::mint`]. `MintSpec::new(aud)` gives a
/// valid app-only v1 token for `aud`, living an hour, for the configured managed identity.
/// A `scp` makes it a user (delegated) token; `extra_claims` are written last, over every other
/// claim, for tokens no Entra would issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintSpec {
    pub aud: String,
    /// Defaults to the configured tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Seconds from now to `exp`; negative means already expired.
    #[serde(default = "default_lifetime_secs")]
    pub lifetime_secs: i64,
    /// Offset of `nbf` from now; positive means not valid yet.
    #[serde(default)]
    pub not_before_secs: i64,
    /// Defaults to the configured managed identity's object id.
    #[serde(default)]
    pub oid: Option<String>,
    /// The client application: written as `appid` in v1 tokens and `azp` in v2 tokens (JSON
    /// accepts either name). Defaults to the configured managed identity's client id.
    #[serde(default, alias = "azp")]
    pub appid: Option<String>,
    /// App roles (`roles`); empty means no claim.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Group object ids (`groups`); empty means no claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The groups overage form Entra writes for a user in more than [`GROUPS_OVERAGE_LIMIT`]
    /// groups: no `groups` claim, but `_claim_names: {"groups":"src1"}` and `_claim_sources:
    /// {"src1":{"endpoint":"https://graph.microsoft.com/v1.0/users/{oid}/getMemberObjects"}}`.
    /// Source: Microsoft Learn, "Access token claims reference" (`groups:src1`, `hasgroups`;
    /// `hasgroups: true` is the implicit flow's form, which `extra_claims` can write).
    #[serde(default)]
    pub groups_overage: bool,
    /// A delegated scope: makes it a user-style token (no `idtyp: app`).
    #[serde(default)]
    pub scp: Option<String>,
    #[serde(default)]
    pub version: TokenVersion,
    /// Overrides the header's `kid` (and `x5t`), e.g. with one no JWKS knows.
    #[serde(default)]
    pub kid: Option<String>,
    /// Signs something else, so the signature does not verify.
    #[serde(default)]
    pub bad_signature: bool,
    /// Claims written last, over everything above: `groups` as a string, `roles` as an object,
    /// 10,000 groups, an `oid` that is not a GUID, another `iss`…
    #[serde(default)]
    pub extra_claims: Map<String, Value>,
}

/// A token from an issuer outside Entra, of the kind a workload presents as a federated identity
/// credential (a Kubernetes service account token, a CI system's OIDC token). The emulator plays
/// every such issuer: it signs these with its own current key, and trusts that key for any issuer
/// a federated identity credential names (real Entra fetches the issuer's OIDC metadata and
/// JWKS; nothing here leaves loopback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalTokenSpec {
    pub issuer: String,
    pub subject: String,
    /// `api://AzureADTokenExchange` by default (written as a one-element array, as Kubernetes
    /// does).
    #[serde(default = "default_exchange_audience")]
    pub audience: String,
    /// Seconds from now to `exp`; negative means already expired.
    #[serde(default = "default_lifetime_secs")]
    pub lifetime_secs: i64,
    /// Offset of `nbf` from now; positive means not valid yet.
    #[serde(default)]
    pub not_before_secs: i64,
    /// Overrides the header's `kid`, e.g. with one the issuer does not publish.
    #[serde(default)]
    pub kid: Option<String>,
    /// Signs something else, so the signature does not verify.
    #[serde(default)]
    pub bad_signature: bool,
    /// Claims written last, over the others.
    #[serde(default)]
    pub extra_claims: Map<String, Value>,
}

/// A fully resolved token to sign: what the token endpoints and `mint` produce.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grant {
    pub(crate) version: TokenVersion,
    pub(crate) cloud: Cloud,
    pub(crate) tenant_id: String,
    pub(crate) aud: String,
    pub(crate) lifetime_secs: i64,
    pub(crate) not_before_secs: i64,
    pub(crate) oid: String,
    pub(crate) appid: String,
    /// `appidacr`/`azpacr`: "0" public client, "1" secret, "2" certificate or assertion.
    pub(crate) app_acr: &'static str,
    pub(crate) roles: Vec<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) groups_overage: bool,
    pub(crate) scp: Option<String>,
    /// `sub` when it is not the object id (a user's token: a pairwise id per application).
    pub(crate) sub: Option<String>,
    pub(crate) mirid: Option<String>,
    pub(crate) epoch: u32,
    pub(crate) kid: Option<String>,
    pub(crate) bad_signature: bool,
    /// Written last, over the claims above.
    pub(crate) extra: Map<String, Value>,
}

/// An RSA-2048 key with its published form.
pub(crate) struct SigningKey {
    kid: String,
    pair: KeyPair,
    n: String,
    e: String,
    decoding: DecodingKey,
}

/// The claims the data plane checks after the signature, and those it records of the caller
/// (any JSON type: a minted token may carry a claim of the wrong type).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CheckedClaims {
    pub(crate) aud: Audience,
    #[serde(default)]
    pub(crate) uti: Option<String>,
    #[serde(default)]
    pub(crate) oid: Option<Value>,
    #[serde(default)]
    pub(crate) appid: Option<Value>,
    #[serde(default)]
    pub(crate) azp: Option<Value>,
    #[serde(default)]
    pub(crate) scp: Option<Value>,
}

/// Why a bearer token did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    UnknownKid,
    Expired,
    NotYetValid,
    Invalid(String),
}

#[derive(Serialize)]
struct JwtHeader<'a> {
    typ: &'static str,
    alg: &'static str,
    x5t: &'a str,
    kid: &'a str,
}

/// Claims in the order Entra writes them.
#[derive(Serialize)]
struct TokenClaims<'a> {
    aud: &'a str,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    aio: String,
    #[serde(rename = "_claim_names", skip_serializing_if = "Option::is_none")]
    claim_names: Option<Value>,
    #[serde(rename = "_claim_sources", skip_serializing_if = "Option::is_none")]
    claim_sources: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appidacr: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    azpacr: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idtyp: Option<&'static str>,
    oid: &'a str,
    rh: String,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    scp: Option<&'a str>,
    sub: &'a str,
    tid: &'a str,
    uti: String,
    ver: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    xms_mirid: Option<&'a str>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl MintSpec {
    /// A valid v1 app token for `aud`, living 3600 s, for the configured managed identity.
    pub fn new(aud: impl Into<String>) -> Self {
        MintSpec {
            aud: aud.into(),
            tenant_id: None,
            lifetime_secs: default_lifetime_secs(),
            not_before_secs: 0,
            oid: None,
            appid: None,
            roles: Vec::new(),
            groups: Vec::new(),
            groups_overage: false,
            scp: None,
            version: TokenVersion::V1,
            kid: None,
            bad_signature: false,
            extra_claims: Map::new(),
        }
    }

    pub(crate) fn to_grant(&self, config: &EmulatorConfig, epoch: u32) -> Grant {
        Grant {
            version: self.version,
            cloud: config.cloud,
            tenant_id: self
                .tenant_id
                .clone()
                .unwrap_or_else(|| config.tenant_id.clone()),
            aud: self.aud.trim_end_matches('/').to_owned(),
            lifetime_secs: self.lifetime_secs,
            not_before_secs: self.not_before_secs,
            oid: self
                .oid
                .clone()
                .unwrap_or_else(|| config.managed_identity_object_id.clone()),
            appid: self
                .appid
                .clone()
                .unwrap_or_else(|| config.managed_identity_client_id.clone()),
            app_acr: "2",
            roles: self.roles.clone(),
            groups: self.groups.clone(),
            groups_overage: self.groups_overage,
            scp: self.scp.clone(),
            sub: None,
            mirid: None,
            epoch,
            kid: self.kid.clone(),
            bad_signature: self.bad_signature,
            extra: self.extra_claims.clone(),
        }
    }
}

impl ExternalTokenSpec {
    /// A valid token from `issuer` about `subject` for `api://AzureADTokenExchange`, living an
    /// hour.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        ExternalTokenSpec {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: default_exchange_audience(),
            lifetime_secs: default_lifetime_secs(),
            not_before_secs: 0,
            kid: None,
            bad_signature: false,
            extra_claims: Map::new(),
        }
    }

    /// A Kubernetes service account token as the workload identity webhook projects it into a
    /// pod: subject `system:serviceaccount:{namespace}:{service_account}`, audience
    /// `api://AzureADTokenExchange`. Source: Microsoft Learn, "Use Microsoft Entra Workload ID
    /// with Azure Kubernetes Service" (federated credential subject format).
    pub fn kubernetes(issuer: impl Into<String>, namespace: &str, service_account: &str) -> Self {
        let mut spec = ExternalTokenSpec::new(
            issuer,
            format!("system:serviceaccount:{namespace}:{service_account}"),
        );
        spec.extra_claims.insert(
            "kubernetes.io".to_owned(),
            serde_json::json!({
                "namespace": namespace,
                "serviceaccount": { "name": service_account, "uid": derived_uuid(&format!("sa:{namespace}:{service_account}")) },
            }),
        );
        spec
    }

    /// The claims, at `now`.
    pub(crate) fn claims(&self, now: i64) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("aud".to_owned(), Value::from(vec![self.audience.clone()]));
        claims.insert(
            "exp".to_owned(),
            Value::from(now.saturating_add(self.lifetime_secs)),
        );
        claims.insert("iat".to_owned(), Value::from(now));
        claims.insert("iss".to_owned(), Value::from(self.issuer.clone()));
        claims.insert(
            "nbf".to_owned(),
            Value::from(now.saturating_add(self.not_before_secs)),
        );
        claims.insert("sub".to_owned(), Value::from(self.subject.clone()));
        for (name, value) in &self.extra_claims {
            claims.insert(name.clone(), value.clone());
        }
        claims
    }
}

impl SigningKey {
    /// A fresh RSA-2048 key.
    pub(crate) fn generate() -> io::Result<SigningKey> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| io::Error::other("RSA-2048 key generation failed"))?;
        let public = pair.public_key();
        let n_raw = public.modulus().big_endian_without_leading_zero().to_vec();
        let e_raw = public.exponent().big_endian_without_leading_zero().to_vec();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&n_raw)[..20]);
        Ok(SigningKey {
            kid,
            decoding: DecodingKey::from_rsa_raw_components(&n_raw, &e_raw),
            n: URL_SAFE_NO_PAD.encode(&n_raw),
            e: URL_SAFE_NO_PAD.encode(&e_raw),
            pair,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// This key as a JWK, the way Entra publishes it.
    pub(crate) fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n,
            "e": self.e,
            "alg": "RS256",
        })
    }

    /// The JWKS document: only this key (rotation replaces it).
    pub(crate) fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk()] })
    }

    /// Signs a grant into a compact JWS. Never fails in practice; if the signer does, the
    /// token has an empty signature, which no verifier accepts.
    pub(crate) fn sign(&self, grant: &Grant) -> String {
        let claims = grant.claims(now_unix());
        if grant.extra.is_empty() {
            return self.sign_claims(&claims, grant.kid.as_deref(), grant.bad_signature);
        }
        let mut merged = match serde_json::to_value(&claims) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for (name, value) in &grant.extra {
            merged.insert(name.clone(), value.clone());
        }
        self.sign_claims(&merged, grant.kid.as_deref(), grant.bad_signature)
    }

    /// Signs a token from an issuer outside Entra.
    pub(crate) fn sign_external(&self, spec: &ExternalTokenSpec) -> String {
        self.sign_claims(
            &spec.claims(now_unix()),
            spec.kid.as_deref(),
            spec.bad_signature,
        )
    }

    /// Signs any claims with this key (RS256), the header naming `kid` (this key's by default).
    pub(crate) fn sign_claims<T: Serialize>(
        &self,
        claims: &T,
        kid: Option<&str>,
        bad_signature: bool,
    ) -> String {
        let kid = kid.unwrap_or(&self.kid);
        let header = JwtHeader {
            typ: "JWT",
            alg: "RS256",
            x5t: kid,
            kid,
        };
        let signing_input = format!("{}.{}", b64_json(&header), b64_json(claims));
        let signed = if bad_signature {
            format!("{signing_input}.tampered")
        } else {
            signing_input.clone()
        };
        let mut signature = vec![0; self.pair.public_modulus_len()];
        match self.pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signed.as_bytes(),
            &mut signature,
        ) {
            Ok(()) => format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&signature)),
            Err(_) => {
                tracing::error!("emulator: RSA signing failed");
                format!("{signing_input}.")
            }
        }
    }

    /// Checks kid, RS256 signature, `exp` and `nbf` (no leeway). Audience and revocation are
    /// the caller's business.
    pub(crate) fn verify(&self, token: &str) -> Result<CheckedClaims, Rejected> {
        self.verify_as(token, &["exp", "aud"])
    }

    /// Like [`SigningKey::verify`], for any token this key signed (an assertion, a federated
    /// credential): only `exp` is required; returns every claim.
    pub(crate) fn verify_claims(&self, token: &str) -> Result<Map<String, Value>, Rejected> {
        self.verify_as(token, &["exp"])
    }

    fn verify_as<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<T, Rejected> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Rejected::Invalid(e.to_string()))?;
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(Rejected::UnknownKid);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(required);
        jsonwebtoken::decode::<T>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Rejected::Expired,
                ErrorKind::ImmatureSignature => Rejected::NotYetValid,
                _ => Rejected::Invalid(e.to_string()),
            })
    }
}

impl Grant {
    fn claims(&self, now: i64) -> TokenClaims<'_> {
        let v1 = self.version == TokenVersion::V1;
        let iss = if v1 {
            format!("{}/{}/", self.cloud.v1_issuer_host(), self.tenant_id)
        } else {
            format!("{}/{}/v2.0", self.cloud.authority_host(), self.tenant_id)
        };
        let app_only = self.scp.is_none();
        // Source: Microsoft Learn, "Access token claims reference" (`groups:src1`).
        let (claim_names, claim_sources) = if self.groups_overage {
            (
                Some(serde_json::json!({ "groups": "src1" })),
                Some(serde_json::json!({ "src1": { "endpoint": format!(
                    "https://graph.microsoft.com/v1.0/users/{}/getMemberObjects",
                    self.oid
                ) } })),
            )
        } else {
            (None, None)
        };
        let groups: &[String] = if self.groups_overage {
            &[]
        } else {
            &self.groups
        };
        TokenClaims {
            aud: &self.aud,
            claim_names,
            claim_sources,
            groups,
            idp: v1.then(|| iss.clone()),
            iss,
            iat: now,
            nbf: now.saturating_add(self.not_before_secs),
            exp: now.saturating_add(self.lifetime_secs),
            aio: opaque(&format!("aio:{}:{now}", self.oid), 56),
            appid: v1.then_some(self.appid.as_str()),
            appidacr: v1.then_some(self.app_acr),
            azp: (!v1).then_some(self.appid.as_str()),
            azpacr: (!v1).then_some(self.app_acr),
            idtyp: app_only.then_some("app"),
            oid: &self.oid,
            rh: format!(
                "0.{}",
                opaque(&format!("rh:{}:{}", self.tenant_id, self.appid), 64)
            ),
            roles: &self.roles,
            scp: self.scp.as_deref(),
            sub: self.sub.as_deref().unwrap_or(&self.oid),
            tid: &self.tenant_id,
            uti: uti(self.epoch),
            ver: if v1 { "1.0" } else { "2.0" },
            xms_mirid: self.mirid.as_deref(),
        }
    }
}

/// The key every emulator in this process starts with, generated once.
pub(crate) fn first_key() -> io::Result<Arc<SigningKey>> {
    if let Some(key) = FIRST_KEY.get() {
        return Ok(Arc::clone(key));
    }
    let key = Arc::new(SigningKey::generate()?);
    // Another thread may have won the race; everyone then uses the winner's key.
    Ok(Arc::clone(FIRST_KEY.get_or_init(|| key)))
}

/// A `uti` (22 base64url characters like Entra's) that carries the revocation epoch the token
/// was issued in, followed by random bytes.
fn uti(epoch: u32) -> String {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&epoch.to_be_bytes());
    bytes[4..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..12]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The revocation epoch a `uti` was minted in; `None` for a `uti` this emulator did not write.
pub(crate) fn uti_epoch(uti: &str) -> Option<u32> {
    let bytes = URL_SAFE_NO_PAD.decode(uti).ok()?;
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    (bytes.len() == 16).then(|| u32::from_be_bytes(head))
}

/// A stable uuid derived from a seed, for principals the emulator makes up (object ids).
pub(crate) fn derived_uuid(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Opaque base64url filler of about `len` characters, stable for a seed.
fn opaque(seed: &str, len: usize) -> String {
    let mut out = String::new();
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.push_str(&URL_SAFE_NO_PAD.encode(block));
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

fn b64_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail; an empty object keeps the token well-formed.
    let json = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    URL_SAFE_NO_PAD.encode(json)
}

fn default_lifetime_secs() -> i64 {
    3600
}

fn default_exchange_audience() -> String {
    crate::Cloud::Public.token_exchange_audience().to_owned()
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{Part, part};

    fn grant(aud: &str) -> Grant {
        MintSpec::new(aud).to_grant(&EmulatorConfig::default(), 3)
    }

    /// Header and claims as JSON, read without the signature.
    fn decoded(token: &str) -> (serde_json::Value, serde_json::Value) {
        (
            part(token, Part::Header).unwrap(),
            part(token, Part::Payload).unwrap(),
        )
    }

    #[test]
    fn minted_v1_token_verifies_and_has_entra_claims() {
        let key = first_key().unwrap();
        let token = key.sign(&grant("https://cognitiveservices.azure.com/"));
        let claims = key.verify(&token).unwrap();
        assert_eq!(
            claims.aud,
            Audience::One("https://cognitiveservices.azure.com".into())
        );
        assert_eq!(uti_epoch(claims.uti.as_deref().unwrap()), Some(3));
        let (header, claims) = decoded(&token);
        assert_eq!(header["kid"], key.kid());
        assert_eq!(header["alg"], "RS256");
        let tid = EmulatorConfig::default().tenant_id;
        assert_eq!(claims["iss"], format!("https://sts.windows.net/{tid}/"));
        assert_eq!(claims["ver"], "1.0");
        assert_eq!(claims["idtyp"], "app");
        assert_eq!(claims["sub"], claims["oid"]);
        assert!(claims.get("azp").is_none());
    }

    #[test]
    fn v2_tokens_use_azp_and_the_authority_issuer() {
        let key = first_key().unwrap();
        let mut g = grant("api://x");
        g.version = TokenVersion::V2;
        g.cloud = Cloud::Usgov;
        let (_, claims) = decoded(&key.sign(&g));
        assert_eq!(claims["ver"], "2.0");
        assert!(claims.get("appid").is_none());
        assert_eq!(claims["azp"], g.appid.as_str());
        assert_eq!(
            claims["iss"],
            format!("https://login.microsoftonline.us/{}/v2.0", g.tenant_id)
        );
    }

    #[test]
    fn tampered_expired_early_and_foreign_tokens_are_rejected() {
        let key = first_key().unwrap();
        let mut g = grant("a");
        g.bad_signature = true;
        assert!(matches!(
            key.verify(&key.sign(&g)),
            Err(Rejected::Invalid(_))
        ));
        let mut g = grant("a");
        g.lifetime_secs = -10;
        assert_eq!(key.verify(&key.sign(&g)).unwrap_err(), Rejected::Expired);
        let mut g = grant("a");
        g.not_before_secs = 600;
        assert_eq!(
            key.verify(&key.sign(&g)).unwrap_err(),
            Rejected::NotYetValid
        );
        let mut g = grant("a");
        g.kid = Some("nope".into());
        assert_eq!(key.verify(&key.sign(&g)).unwrap_err(), Rejected::UnknownKid);
        assert!(matches!(key.verify("garbage"), Err(Rejected::Invalid(_))));
    }

    #[test]
    fn jwks_publishes_the_key_that_verifies() {
        let key = first_key().unwrap();
        let jwks = key.jwks();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let token = key.sign(&grant("aud-x"));
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["aud-x"]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v).is_ok());
        assert_eq!(jwks["keys"][0]["kid"], key.kid());
    }

    #[test]
    fn helpers_are_stable_and_total() {
        assert_eq!(derived_uuid("a"), derived_uuid("a"));
        assert_ne!(derived_uuid("a"), derived_uuid("b"));
        assert_eq!(
            uuid::Uuid::parse_str(&derived_uuid("a"))
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(uti(7).len(), 22);
        assert_eq!(uti_epoch(&uti(7)), Some(7));
        assert_eq!(uti_epoch("short"), None);
        assert_eq!(uti_epoch("!!"), None);
        assert_eq!(opaque("s", 70).len(), 70);
    }
}
