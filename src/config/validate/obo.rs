//! `[on_behalf_of]`: the proxy's app registration for the on-behalf-of exchange, and how it
//! proves it is that app — a client secret, a certificate (read and checked against its key
//! here), or, with no secret at all, the proxy's own managed or workload identity as a
//! federated credential of the app.

use crate::config::errors::Errors;
use crate::config::raw::RawOnBehalfOf;
use crate::config::{AppCertificate, AppProof, DEFAULT_OBO_MAX_USERS, IdentityConfig, OnBehalfOf};
use secrecy::{ExposeSecret as _, SecretString};

pub(super) fn validate_obo(
    raw: RawOnBehalfOf,
    identity: Option<&IdentityConfig>,
    errors: &mut Errors,
) -> Option<OnBehalfOf> {
    let before = errors.len();
    let client_id = errors.check("on_behalf_of.client_id", guid(&raw.client_id));
    let tenant_id = errors.check("on_behalf_of.tenant_id", tenant(&raw.tenant_id));
    let max_users = match raw.max_users {
        None => DEFAULT_OBO_MAX_USERS,
        Some(n) if (1..=10_000_000).contains(&n) => n as u64,
        Some(n) => {
            errors.add(
                "on_behalf_of.max_users",
                format!("{n} is out of range: use 1 to 10000000 (users whose tokens are cached)"),
            );
            DEFAULT_OBO_MAX_USERS
        }
    };
    let proof = proof(&raw, identity, errors);
    if errors.len() != before {
        return None;
    }
    Some(OnBehalfOf {
        client_id: client_id?,
        tenant_id: tenant_id?,
        proof: proof?,
        max_users,
    })
}

/// How the app is proven, and the settings that kind needs (and no others).
fn proof(
    raw: &RawOnBehalfOf,
    identity: Option<&IdentityConfig>,
    errors: &mut Errors,
) -> Option<AppProof> {
    let key = "on_behalf_of.credential";
    let set = [
        ("client_secret", raw.client_secret.is_some()),
        ("client_secret_file", raw.client_secret_file.is_some()),
        ("certificate_file", raw.certificate_file.is_some()),
        ("private_key_file", raw.private_key_file.is_some()),
    ];
    let allowed: &[&str] = match raw.credential.as_str() {
        "client-secret" => &["client_secret", "client_secret_file"],
        "certificate" => &["certificate_file", "private_key_file"],
        "managed-identity" | "workload-identity" => &[],
        other => {
            return errors.reject(
                key,
                format!("{other:?} is not one of managed-identity, workload-identity, certificate, client-secret"),
            );
        }
    };
    for (field, present) in set {
        if present && !allowed.contains(&field) {
            errors.add(
                format!("on_behalf_of.{field}"),
                format!(
                    "is not used with credential = {:?}; remove it",
                    raw.credential
                ),
            );
        }
    }
    match raw.credential.as_str() {
        "client-secret" => client_secret(raw, errors).map(AppProof::ClientSecret),
        "certificate" => certificate(raw, errors).map(|c| AppProof::Certificate(c.into())),
        kind => federated(kind, identity, errors),
    }
}

/// The secret, given inline (`${VAR}`) or in a file (trimmed).
fn client_secret(raw: &RawOnBehalfOf, errors: &mut Errors) -> Option<SecretString> {
    match (&raw.client_secret, &raw.client_secret_file) {
        (Some(_), Some(_)) => errors.reject(
            "on_behalf_of.client_secret",
            "set client_secret or client_secret_file, not both",
        ),
        (Some(s), None) if s.expose_secret().trim().is_empty() => {
            errors.reject("on_behalf_of.client_secret", "is empty")
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(path)) => {
            let text = read(raw, path, "on_behalf_of.client_secret_file", errors)?;
            match text.trim() {
                "" => errors.reject("on_behalf_of.client_secret_file", format!("{path}: is empty")),
                secret => Some(SecretString::from(secret.to_string())),
            }
        }
        (None, None) => errors.reject(
            "on_behalf_of.client_secret",
            "credential = \"client-secret\" needs client_secret = \"${OBO_CLIENT_SECRET}\" or client_secret_file",
        ),
    }
}

/// The certificate and its key (in one file, or the key in `private_key_file`), checked
/// against each other.
fn certificate(raw: &RawOnBehalfOf, errors: &mut Errors) -> Option<AppCertificate> {
    let Some(cert_path) = &raw.certificate_file else {
        return errors.reject(
            "on_behalf_of.certificate_file",
            "credential = \"certificate\" needs certificate_file (a PEM certificate, with its private key or beside private_key_file)",
        );
    };
    let cert = read(raw, cert_path, "on_behalf_of.certificate_file", errors)?;
    let (key, key_setting, key_path) = match &raw.private_key_file {
        Some(p) => (
            read(raw, p, "on_behalf_of.private_key_file", errors)?,
            "on_behalf_of.private_key_file",
            p.as_str(),
        ),
        None => (
            cert.clone(),
            "on_behalf_of.certificate_file",
            cert_path.as_str(),
        ),
    };
    match AppCertificate::from_pem(&cert, &key) {
        Ok(c) => Some(c),
        Err(e) if e.contains("private key") || e.contains("PRIVATE KEY") => {
            errors.reject(key_setting, format!("{key_path}: {e}"))
        }
        Err(e) => errors.reject("on_behalf_of.certificate_file", format!("{cert_path}: {e}")),
    }
}

/// The proxy's own identity as the app's federated credential: it must be that kind.
fn federated(
    kind: &str,
    identity: Option<&IdentityConfig>,
    errors: &mut Errors,
) -> Option<AppProof> {
    let (proof, matches) = match kind {
        "managed-identity" => (
            AppProof::ManagedIdentity,
            matches!(identity, Some(IdentityConfig::ManagedIdentity { .. })),
        ),
        _ => (
            AppProof::WorkloadIdentity,
            matches!(identity, Some(IdentityConfig::WorkloadIdentity { .. })),
        ),
    };
    if identity.is_some() && !matches {
        return errors.reject(
            "on_behalf_of.credential",
            format!(
                "{kind:?} proves the app with the proxy's own {kind}, but [identity] kind is {:?}; set [identity] kind = {kind:?} (the identity the app registration's federated credential names)",
                identity.map_or("auto", IdentityConfig::kind_name)
            ),
        );
    }
    Some(proof)
}

/// The text of a file named by a setting, as read with the config.
fn read(raw: &RawOnBehalfOf, path: &str, setting: &str, errors: &mut Errors) -> Option<String> {
    match raw.read.iter().find(|(p, _)| p == path).map(|(_, r)| r) {
        Some(Ok(text)) => Some(text.clone()),
        Some(Err(reason)) => errors.reject(setting, format!("{path}: cannot read: {reason}")),
        None => errors.reject(setting, format!("{path}: was not read")),
    }
}

fn guid(v: &str) -> Result<String, String> {
    let v = v.trim();
    let shape = [8, 4, 4, 4, 12];
    let parts: Vec<&str> = v.split('-').collect();
    let ok = parts.len() == 5
        && parts
            .iter()
            .zip(shape)
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()));
    match ok {
        true => Ok(v.to_ascii_lowercase()),
        false => Err(format!(
            "{v:?} is not an application (client) id; it is a GUID like 5e5c3f1a-0000-4000-8000-0000000000a1"
        )),
    }
}

fn tenant(v: &str) -> Result<String, String> {
    let v = v.trim();
    match !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        true => Ok(v.to_ascii_lowercase()),
        false => Err(format!("{v:?} is not a tenant id or domain")),
    }
}
