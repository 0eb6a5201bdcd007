//! `Authorization: Basic base64(client_id:client_secret)`: a service principal's credentials,
//! exchanged by the proxy for that app's own token. The secret is held as a `SecretString` and
//! identified only by a digest of (tenant, client id, secret).

use super::{AuthError, Caller, CallerLabel, Held};
use crate::config::ClientCredentialsInbound;
use axum::http::HeaderMap;
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Digest as _;
use std::fmt;
use std::sync::Arc;

/// Header a caller may use to name its tenant, when allowed.
pub const TENANT_HEADER: &str = "x-ms-tenant-id";

/// An app's client credentials, as presented by a caller.
pub struct AppCredential {
    pub tenant: String,
    pub client_id: String,
    pub secret: SecretString,
    /// SHA-256 of tenant, client id and secret: the cache key, never the secret itself.
    pub digest: [u8; 32],
}

impl fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredential")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl AppCredential {
    pub fn new(tenant: &str, client_id: &str, secret: SecretString) -> AppCredential {
        let mut h = sha2::Sha256::new();
        for part in [tenant, client_id, secret.expose_secret()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        AppCredential {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            secret,
            digest: h.finalize().into(),
        }
    }
}

/// Decodes the value after `Basic `. Errors say what is wrong, never what was sent.
pub fn parse_basic(value: &str) -> Result<(String, SecretString), &'static str> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| "`Authorization: Basic` is not valid base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "`Authorization: Basic` is not UTF-8")?;
    let (id, secret) = text
        .split_once(':')
        .ok_or("`Authorization: Basic` must encode client_id:client_secret")?;
    if id.trim().is_empty() || secret.is_empty() {
        return Err("`Authorization: Basic` has an empty client id or secret");
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("the client id in `Authorization: Basic` is not an application (client) id");
    }
    Ok((id.to_string(), SecretString::from(secret.to_string())))
}

/// `Authorization: Basic` client credentials, with the tenant from the config or (when allowed)
/// the `x-ms-tenant-id` header: the app caller, or why not.
pub(super) fn authenticate(
    settings: &ClientCredentialsInbound,
    identities: &super::Identities,
    headers: &HeaderMap,
    value: &str,
) -> Result<Caller, AuthError> {
    let (client_id, secret) = parse_basic(value).map_err(AuthError::MalformedAuthorization)?;
    let header_tenant = headers
        .get(TENANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let tenant = match (
        header_tenant,
        settings.allow_tenant_header,
        &settings.tenant_id,
    ) {
        (Some(t), true, _) if !valid_tenant(t) => {
            return Err(AuthError::MalformedAuthorization(
                "x-ms-tenant-id is not a tenant id",
            ));
        }
        (Some(t), true, _) => t.to_ascii_lowercase(),
        (_, _, Some(t)) => t.clone(),
        (_, _, None) => return Err(AuthError::MissingTenant),
    };
    let app = Arc::new(AppCredential::new(&tenant, &client_id, secret));
    let principal = super::Principal::of_app(&app.client_id, &app.tenant);
    Caller::identified(
        identities,
        &principal,
        CallerLabel::App,
        Held::App(app.clone()),
    )
}

/// Whether a caller-supplied tenant is shaped like a tenant id or domain.
fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_and_keeps_the_secret_out_of_debug() {
        let v = base64::engine::general_purpose::STANDARD.encode("app-1:s3cr:et");
        let (id, secret) = parse_basic(&v).unwrap();
        assert_eq!(id, "app-1");
        assert_eq!(secret.expose_secret(), "s3cr:et");
        let a = AppCredential::new("t", &id, secret);
        assert!(!format!("{a:?}").contains("s3cr"));
        assert!(parse_basic("%%%").is_err());
        assert!(parse_basic(&base64::engine::general_purpose::STANDARD.encode("nocolon")).is_err());
    }

    #[test]
    fn digest_differs_by_every_part() {
        let d = |t: &str, c: &str, s: &str| {
            AppCredential::new(t, c, SecretString::from(s.to_string())).digest
        };
        assert_ne!(d("t", "c", "s"), d("t", "c", "s2"));
        assert_ne!(d("t", "c", "s"), d("t2", "c", "s"));
        assert_ne!(d("ab", "c", "s"), d("a", "bc", "s"));
    }
}
