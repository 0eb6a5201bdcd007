//! Client authentication at the token endpoint: a secret, a certificate-signed client
//! assertion, or a federated credential (another issuer's token the app trusts).
//!
//! Which assertion is which: one whose `iss` is the client id is the app's own, signed with a
//! certificate (`private_key_jwt`); any other `iss` is a federated credential. Sources:
//! Microsoft Learn, "Microsoft identity platform application authentication certificate
//! credentials" (`iss` = `sub` = client id) and "Workload identity federation".

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::apps::App;
use super::certs::{ParsedCertificate, hex_upper};
use super::cloud::same_audience;
use super::entra::{EntraError, entra_instant};
use super::jwt::{Part, part};
use super::keys::{Rejected, now_unix};
use super::state::{ClientAuthKind, Shared};

pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The grant a client authenticates for: the rules differ only for unregistered clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantKind {
    ClientCredentials,
    OnBehalfOf,
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) client_id: String,
    /// `None` for an unregistered workload identity (client credentials only; see
    /// [`authenticate`]).
    pub(crate) kind: Option<ClientAuthKind>,
    pub(crate) app: Option<App>,
}

impl Client {
    /// `appidacr`/`azpacr` of the tokens issued to it.
    pub(crate) fn acr(&self) -> &'static str {
        self.kind.map_or("2", ClientAuthKind::acr)
    }
}

/// Checks the client's credential. `endpoints` are the token endpoint URLs a certificate
/// assertion's `aud` may name.
///
/// A client that is not registered and presents an assertion is let in for the
/// client-credentials grant without checks: a workload identity whose app a test did not
/// register (what the emulator always did). A registered app's assertion is checked by Entra's
/// rules, and the on-behalf-of grant takes registered apps only.
pub(crate) fn authenticate(
    shared: &Shared,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
    endpoints: &[String],
    grant: GrantKind,
) -> Result<Client, EntraError> {
    let basic = basic_credentials(headers);
    let form_client = form.get("client_id").filter(|c| !c.is_empty()).cloned();
    let registered = |client_id: &str| {
        shared
            .app(client_id)
            .filter(|app| app.tenant_id.eq_ignore_ascii_case(tenant))
    };
    let not_found = |client_id: &str| EntraError::AppNotFound {
        client_id: client_id.to_owned(),
        tenant: tenant.to_owned(),
    };
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER_ASSERTION) {
            return Err(EntraError::MissingParameter("client_assertion_type"));
        }
        let (header, claims) = read_jwt(assertion).ok_or(EntraError::MalformedAssertion)?;
        let client_id = form_client
            .or_else(|| string(&claims, "sub"))
            .ok_or(EntraError::MissingParameter("client_id"))?;
        let Some(app) = registered(&client_id) else {
            return match grant {
                GrantKind::ClientCredentials => Ok(Client {
                    client_id,
                    kind: None,
                    app: None,
                }),
                GrantKind::OnBehalfOf => Err(not_found(&client_id)),
            };
        };
        let kind = if string(&claims, "iss").as_deref() == Some(client_id.as_str()) {
            certificate_assertion(&app, assertion, &header, &claims, endpoints)?;
            ClientAuthKind::Certificate
        } else {
            federated_assertion(shared, &app, assertion, &claims)?;
            ClientAuthKind::FederatedCredential
        };
        return Ok(Client {
            client_id,
            kind: Some(kind),
            app: Some(app),
        });
    }
    let secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.as_ref().map(|(_, s)| s.clone()));
    let client_id = form_client
        .or_else(|| basic.map(|(c, _)| c))
        .ok_or(EntraError::MissingParameter("client_id"))?;
    let Some(secret) = secret else {
        return Err(match grant {
            GrantKind::ClientCredentials => EntraError::NoCredential,
            GrantKind::OnBehalfOf => EntraError::NoClientCredential,
        });
    };
    let app = registered(&client_id).ok_or_else(|| not_found(&client_id))?;
    if app.expired && app.has_secrets() {
        return Err(EntraError::SecretExpired { client_id });
    }
    if !app.secret_matches(&secret) {
        return Err(EntraError::InvalidSecret { client_id });
    }
    Ok(Client {
        client_id,
        kind: Some(ClientAuthKind::Secret),
        app: Some(app),
    })
}

/// A `private_key_jwt` assertion: a registered certificate by thumbprint, its signature
/// (PS256 or RS256), `sub` = `iss`, `aud` = this token endpoint, `jti`, `exp`/`nbf`.
fn certificate_assertion(
    app: &App,
    token: &str,
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    endpoints: &[String],
) -> Result<(), EntraError> {
    let thumbprint = |name: &str| {
        header
            .get(name)
            .and_then(Value::as_str)
            .and_then(|t| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')).ok())
    };
    let sha256 = thumbprint("x5t#S256");
    let sha1 = thumbprint("x5t");
    let shown = sha256
        .as_deref()
        .or(sha1.as_deref())
        .map(hex_upper)
        .unwrap_or_default();
    let cert: Option<&ParsedCertificate> = app.certificates.iter().find(|c| {
        sha256.as_deref() == Some(c.sha256.as_slice()) || sha1.as_deref() == Some(c.sha1.as_slice())
    });
    let Some(cert) = cert else {
        return Err(EntraError::CertificateNotFound {
            client_id: app.client_id.clone(),
            thumbprint: shown,
        });
    };
    let bad_signature = || EntraError::ClientAssertionBadSignature {
        thumbprint: shown.clone(),
    };
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("PS256") => Algorithm::PS256,
        Some("RS256") => Algorithm::RS256,
        _ => return Err(bad_signature()),
    };
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    jsonwebtoken::decode::<Value>(token, &cert.key, &validation).map_err(|_| bad_signature())?;
    if string(claims, "sub") != string(claims, "iss") {
        return Err(EntraError::ClientAssertionSubject);
    }
    let audiences = audiences(claims);
    // Source: AADSTS5002741 ("Number of audience values in the provided client credential
    // exceed maximum allowed ... maximum allowed is 1").
    let [aud] = audiences.as_slice() else {
        return Err(EntraError::ClientAssertionAudience);
    };
    if !endpoints.iter().any(|e| same_audience(e, aud)) {
        return Err(EntraError::ClientAssertionAudience);
    }
    if string(claims, "jti").is_none() {
        return Err(EntraError::ClientAssertionClaimMissing("jti"));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(EntraError::ClientAssertionClaimMissing("exp"))?;
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    let now = now_unix();
    if now >= exp || nbf.is_some_and(|nbf| now < nbf) {
        return Err(EntraError::ClientAssertionTimeRange {
            now: entra_instant(now),
            nbf: entra_instant(nbf.unwrap_or(0)),
            exp: entra_instant(exp),
        });
    }
    Ok(())
}

/// A federated credential: a token the emulator signed (it plays every issuer), unexpired,
/// whose `iss`, `sub` and `aud` match one of the app's federated identity credentials exactly.
/// Sources: Microsoft Learn, "Workload identity federation"; AADSTS700211/700212/700213 (no
/// matching record for the issuer, audience, subject), AADSTS7000272 (signing key not in the
/// issuer's metadata), AADSTS700229 (only app-only tokens from an Entra issuer) in Microsoft
/// Learn, "Microsoft Entra authentication and authorization error codes".
fn federated_assertion(
    shared: &Shared,
    app: &App,
    token: &str,
    claims: &Map<String, Value>,
) -> Result<(), EntraError> {
    let issuer = string(claims, "iss").unwrap_or_default();
    if let Err(rejected) = shared.signing_key().verify_claims(token) {
        let kid = part::<Map<String, Value>>(token, Part::Header)
            .ok()
            .and_then(|h| string(&h, "kid"))
            .unwrap_or_default();
        return Err(match rejected {
            Rejected::UnknownKid => EntraError::FederatedKeyNotFound { kid, issuer },
            Rejected::Invalid(_) => EntraError::FederatedBadSignature,
            Rejected::Expired | Rejected::NotYetValid => EntraError::ClientAssertionTimeRange {
                now: entra_instant(now_unix()),
                nbf: entra_instant(claims.get("nbf").and_then(Value::as_i64).unwrap_or(0)),
                exp: entra_instant(claims.get("exp").and_then(Value::as_i64).unwrap_or(0)),
            },
        });
    }
    let cloud = shared.config.cloud;
    let entra_issuer =
        issuer.starts_with(cloud.authority_host()) || issuer.starts_with(cloud.v1_issuer_host());
    if entra_issuer && claims.contains_key("scp") {
        return Err(EntraError::FederatedUserToken);
    }
    let subject = string(claims, "sub").unwrap_or_default();
    let by_issuer: Vec<_> = app
        .federated
        .iter()
        .filter(|f| f.issuer == issuer)
        .collect();
    if by_issuer.is_empty() {
        return Err(EntraError::FederatedIssuer { issuer });
    }
    let by_subject: Vec<_> = by_issuer
        .into_iter()
        .filter(|f| f.subject == subject)
        .collect();
    if by_subject.is_empty() {
        return Err(EntraError::FederatedSubject { subject });
    }
    let audiences = audiences(claims);
    if !by_subject
        .iter()
        .any(|f| f.audiences.iter().any(|a| audiences.contains(a)))
    {
        return Err(EntraError::FederatedAudience {
            audience: audiences.join(","),
        });
    }
    Ok(())
}

/// `client_secret_basic`: `Authorization: Basic base64(client_id:secret)`, both form-encoded.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

/// A compact JWS's header and claims as JSON objects; `None` if it is not one.
pub(crate) fn read_jwt(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    Some((
        part(token, Part::Header).ok()?,
        part(token, Part::Payload).ok()?,
    ))
}

/// A claim that is a string.
pub(crate) fn string(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// `aud` as a list: a string, or an array of strings.
pub(crate) fn audiences(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("my%20app:s%3Acret"));
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        assert_eq!(
            basic_credentials(&h),
            Some(("my app".to_owned(), "s:cret".to_owned()))
        );
        h.insert(http::header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }

    #[test]
    fn audiences_are_a_string_or_strings() {
        let claims = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(audiences(&claims(serde_json::json!({"aud":"a"}))), ["a"]);
        assert_eq!(
            audiences(&claims(serde_json::json!({"aud":["a",1,"b"]}))),
            ["a", "b"]
        );
        assert!(audiences(&claims(serde_json::json!({"aud":{}}))).is_empty());
    }
}
