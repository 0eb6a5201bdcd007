//! `[inbound]`: which kinds of client credential are accepted, and the Entra and
//! client-credential settings they need.

use crate::config::errors::Errors;
use crate::config::raw::{RawClientCredentials, RawEntraInbound};
use crate::config::{
    ClientCredentialsInbound, DEFAULT_MAX_APPS, EntraInbound, InboundConfig, InboundMode,
    Unmatched, Upstream,
};
use url::Url;

pub(super) fn validate_inbound(
    modes: Option<Vec<InboundMode>>,
    entra: Option<RawEntraInbound>,
    client_credentials: Option<RawClientCredentials>,
    has_identities: bool,
    errors: &mut Errors,
) -> Option<InboundConfig> {
    let has_entra = entra.is_some();
    let unmatched = unmatched(
        entra.as_ref().and_then(|e| e.unmatched.as_deref()),
        has_identities,
        errors,
    );
    let default_upstream = match entra.as_ref().and_then(|e| e.upstream.as_deref()) {
        None => Some(Upstream::ByAudience),
        Some(u) => errors.check("inbound.entra.upstream", upstream(u)),
    };
    let has_client_credentials = client_credentials.is_some();
    let entra = match entra {
        None => Some(None),
        Some(e) => validate_entra(e, errors).map(Some),
    };
    let client_credentials = match client_credentials {
        None => Some(None),
        Some(c) => validate_client_credentials(c, errors).map(Some),
    };
    let modes = validate_modes(modes, has_entra, has_client_credentials, errors);
    Some(InboundConfig {
        modes: modes?,
        entra: entra?,
        client_credentials: client_credentials?,
        unmatched: unmatched?,
        upstream: default_upstream?,
    })
}

/// An `upstream = …` as written.
pub(super) fn upstream(v: &str) -> Result<Upstream, String> {
    match v {
        "proxy" => Ok(Upstream::Proxy),
        "caller" => Ok(Upstream::Caller),
        "on-behalf-of" => Ok(Upstream::OnBehalfOf),
        other => Err(format!(
            "{other:?} is not one of \"proxy\" (the proxy's own token), \"caller\" (the caller's token, for the backend's audience), \"on-behalf-of\" (a token for the signed-in user, exchanged)"
        )),
    }
}

/// `inbound.entra.unmatched`: `deny` by default once any identity is configured (a caller
/// should not slip past every policy), `allow` otherwise (the behaviour without identities).
fn unmatched(v: Option<&str>, has_identities: bool, errors: &mut Errors) -> Option<Unmatched> {
    match v {
        None if has_identities => Some(Unmatched::Deny),
        None => Some(Unmatched::Allow),
        Some("deny") => Some(Unmatched::Deny),
        Some("allow") => Some(Unmatched::Allow),
        Some(other) => errors.reject(
            "inbound.entra.unmatched",
            format!("{other:?} is neither \"deny\" nor \"allow\""),
        ),
    }
}

/// `inbound.modes`, or the modes implied by the sections present.
fn validate_modes(
    modes: Option<Vec<InboundMode>>,
    has_entra: bool,
    has_client_credentials: bool,
    errors: &mut Errors,
) -> Option<Vec<InboundMode>> {
    let key = "inbound.modes";
    let Some(modes) = modes else {
        let mut m = vec![InboundMode::Key];
        if has_entra {
            m.push(InboundMode::Entra);
        }
        if has_client_credentials {
            m.push(InboundMode::ClientCredentials);
        }
        return Some(m);
    };
    if modes.is_empty() {
        return errors.reject(
            key,
            "list at least one of \"key\", \"entra\", \"client-credentials\"",
        );
    }
    let before = errors.len();
    if modes.contains(&InboundMode::Entra) && !has_entra {
        errors.add(
            key,
            "\"entra\" is listed but [inbound.entra] is missing (it names the allowed tenants)",
        );
    }
    if modes.contains(&InboundMode::ClientCredentials) && !has_client_credentials {
        errors.add(
            key,
            "\"client-credentials\" is listed but [inbound.client_credentials] is missing",
        );
    }
    (errors.len() == before).then_some(modes)
}

fn validate_entra(e: RawEntraInbound, errors: &mut Errors) -> Option<EntraInbound> {
    let before = errors.len();
    if e.tenants.is_empty() {
        errors.add(
            "inbound.entra.tenants",
            "list at least one allowed tenant id",
        );
    }
    let tenants: Vec<String> = e
        .tenants
        .iter()
        .enumerate()
        .filter_map(|(i, t)| errors.check(format!("inbound.entra.tenants[{i}]"), tenant(t)))
        .collect();
    for (i, a) in e.audiences.iter().enumerate() {
        if a.trim().is_empty() {
            errors.add(format!("inbound.entra.audiences[{i}]"), "is empty");
        }
    }
    let jwks_url = match &e.jwks_url {
        None => None,
        Some(u) => errors.check(
            "inbound.entra.jwks_url",
            Url::parse(u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| format!("{u:?} is not an http(s) URL")),
        ),
    };
    (errors.len() == before).then(|| EntraInbound {
        tenants,
        audiences: e.audiences.iter().map(|a| a.trim().to_string()).collect(),
        passthrough: e.passthrough.unwrap_or(true),
        jwks_url,
    })
}

fn validate_client_credentials(
    c: RawClientCredentials,
    errors: &mut Errors,
) -> Option<ClientCredentialsInbound> {
    let before = errors.len();
    let tenant_id = match &c.tenant_id {
        Some(t) => errors.check("inbound.client_credentials.tenant_id", tenant(t)),
        None => {
            if !c.allow_tenant_header {
                errors.add(
                    "inbound.client_credentials",
                    "set tenant_id, or allow_tenant_header = true so callers name their tenant in x-ms-tenant-id",
                );
            }
            None
        }
    };
    let max_apps = c.max_apps.unwrap_or(DEFAULT_MAX_APPS);
    if max_apps == 0 {
        errors.add("inbound.client_credentials.max_apps", "must be at least 1");
    }
    (errors.len() == before).then_some(ClientCredentialsInbound {
        tenant_id,
        allow_tenant_header: c.allow_tenant_header,
        max_apps,
    })
}

/// A tenant id as written: a GUID or a domain, lowercased.
fn tenant(t: &str) -> Result<String, String> {
    let t = t.trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "{t:?} is not a tenant id (a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47, or a domain)"
        ));
    }
    Ok(t.to_ascii_lowercase())
}
