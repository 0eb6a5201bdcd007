//! Managed identity token endpoints: App Service (`IDENTITY_ENDPOINT`) and IMDS.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::{HeaderMap, Uri};
use serde::Serialize;

use super::Ctx;
use super::faults;
use super::keys::{self, Grant, TokenVersion};
use super::respond;
use super::state::{Shared, TokenEndpoint, key_matches};
use crate::cloud::same_audience;

/// Subscription and resource group the emulator's identities live in.
const SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000e1e";
const RESOURCE_GROUP: &str = "emulator-rg";

/// A managed identity the emulator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    client_id: String,
    object_id: String,
    resource_id: String,
}

/// A token request the identity endpoints refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsiError {
    Missing(&'static str),
    IdentityNotFound,
}

/// App Service's answer (api-version 2019-08-01).
#[derive(Serialize)]
struct AppServiceBody {
    access_token: String,
    expires_on: String,
    resource: String,
    token_type: &'static str,
    client_id: String,
}

/// IMDS's answer.
#[derive(Serialize)]
struct ImdsBody {
    access_token: String,
    client_id: String,
    expires_in: String,
    expires_on: String,
    ext_expires_in: String,
    not_before: String,
    resource: String,
    token_type: &'static str,
}

impl MsiError {
    fn response(self) -> Response {
        match self {
            MsiError::Missing(name) => error(
                400,
                "invalid_request",
                &format!("Required query variable '{name}' is missing"),
            ),
            MsiError::IdentityNotFound => error(400, "invalid_request", "Identity not found"),
        }
    }
}

pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/msi/token", get(app_service))
        .route("/metadata/identity/oauth2/token", get(imds))
}

async fn app_service(State(ctx): State<Ctx>, uri: Uri, headers: HeaderMap) -> Response {
    let shared = &ctx.shared;
    shared.count_token_request(TokenEndpoint::Msi);
    if let Some(r) = identity_fault(shared, TokenEndpoint::Msi).await {
        return r;
    }
    let header_ok = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| key_matches(&shared.config.identity_header, v));
    if !header_ok {
        return error(
            401,
            "unauthorized",
            "The X-IDENTITY-HEADER header is missing or does not match the value of IDENTITY_HEADER.",
        );
    }
    let query = parse_query(&uri);
    let (identity, resource) = match resolve(shared, &query) {
        Ok(found) => found,
        Err(e) => return e.response(),
    };
    let (token, _, exp) = issue(shared, &identity, &resource);
    respond::json(
        200,
        to_json(&AppServiceBody {
            access_token: token,
            expires_on: exp.to_string(),
            resource,
            token_type: "Bearer",
            client_id: identity.client_id,
        }),
    )
}

async fn imds(State(ctx): State<Ctx>, uri: Uri, headers: HeaderMap) -> Response {
    let shared = &ctx.shared;
    shared.count_token_request(TokenEndpoint::Imds);
    if let Some(r) = identity_fault(shared, TokenEndpoint::Imds).await {
        return r;
    }
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !metadata {
        return error(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let query = parse_query(&uri);
    let (identity, resource) = match resolve(shared, &query) {
        Ok(found) => found,
        Err(e) => return e.response(),
    };
    let (token, now, exp) = issue(shared, &identity, &resource);
    let expires_in = exp.saturating_sub(now).to_string();
    respond::json(
        200,
        to_json(&ImdsBody {
            access_token: token,
            client_id: identity.client_id,
            expires_in: expires_in.clone(),
            expires_on: exp.to_string(),
            ext_expires_in: expires_in,
            not_before: now.to_string(),
            resource,
            token_type: "Bearer",
        }),
    )
}

async fn identity_fault(shared: &Shared, endpoint: TokenEndpoint) -> Option<Response> {
    faults::apply_identity(
        shared,
        endpoint,
        &shared.config.managed_identity_client_id,
        &shared.config.tenant_id,
        None,
    )
    .await
}

/// Checks `api-version` and `resource` and finds the identity asked for.
fn resolve(
    shared: &Shared,
    query: &HashMap<String, String>,
) -> Result<(Identity, String), MsiError> {
    let required = |name: &'static str| {
        query
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or(MsiError::Missing(name))
    };
    required("api-version")?;
    let resource = required("resource")?;
    let known = identities(shared);
    let pick = |matches: &dyn Fn(&Identity) -> bool| {
        known
            .iter()
            .find(|i| matches(i))
            .cloned()
            .ok_or(MsiError::IdentityNotFound)
    };
    let identity = if let Some(client_id) = query.get("client_id") {
        pick(&|i| i.client_id.eq_ignore_ascii_case(client_id))?
    } else if let Some(object_id) = query.get("object_id").or(query.get("principal_id")) {
        pick(&|i| i.object_id.eq_ignore_ascii_case(object_id))?
    } else if let Some(res_id) = query.get("mi_res_id").or(query.get("msi_res_id")) {
        pick(&|i| i.resource_id.eq_ignore_ascii_case(res_id))?
    } else {
        pick(&|_| true)?
    };
    Ok((identity, resource))
}

/// The configured identity first, then the registered user-assigned ones.
fn identities(shared: &Shared) -> Vec<Identity> {
    let config = &shared.config;
    let configured = Identity {
        client_id: config.managed_identity_client_id.clone(),
        object_id: config.managed_identity_object_id.clone(),
        resource_id: resource_id("emulator-identity"),
    };
    std::iter::once(configured)
        .chain(shared.user_assigned().into_iter().map(|client_id| {
            let short: String = client_id.chars().take(8).collect();
            Identity {
                object_id: keys::derived_uuid(&format!("uami:{client_id}")),
                resource_id: resource_id(&format!("emulator-uami-{short}")),
                client_id,
            }
        }))
        .collect()
}

fn resource_id(name: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourcegroups/{RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
}

/// Signs a token for the identity; returns it with issue and expiry times. Tokens for Azure
/// resources are v1.0; a token for `api://AzureADTokenExchange` (the cloud's federated
/// credential audience) is v2.0, issued by `{authority}/{tenant}/v2.0` with the identity's object
/// id as `sub` — the issuer and subject a federated identity credential names for a managed
/// identity. Source: Microsoft Learn, "Configure an application to trust a managed identity".
fn issue(shared: &Shared, identity: &Identity, resource: &str) -> (String, i64, i64) {
    let lifetime = shared.token_lifetime_secs();
    let cloud = shared.config.cloud;
    let exchange = same_audience(resource, cloud.token_exchange_audience());
    let grant = Grant {
        version: if exchange {
            TokenVersion::V2
        } else {
            TokenVersion::V1
        },
        cloud,
        tenant_id: shared.config.tenant_id.clone(),
        aud: if exchange {
            cloud.token_exchange_audience().to_owned()
        } else {
            resource.trim_end_matches('/').to_owned()
        },
        lifetime_secs: lifetime,
        oid: identity.object_id.clone(),
        appid: identity.client_id.clone(),
        app_acr: "2",
        mirid: Some(identity.resource_id.clone()),
        epoch: shared.revocation_epoch(),
        ..Grant::default()
    };
    let now = keys::now_unix();
    (shared.issue(&grant), now, now.saturating_add(lifetime))
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn error(status: u16, error: &str, description: &str) -> Response {
    respond::json_value(
        status,
        &serde_json::json!({ "error": error, "error_description": description }),
    )
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmulatorConfig;
    use crate::keys::first_key;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn identities_are_found_by_client_id_object_id_or_resource_id() {
        let shared = Shared::new(EmulatorConfig::default(), first_key().unwrap());
        shared.register_user_assigned("AAAA1111-0000-4000-8000-000000000001");
        let base = [("api-version", "2019-08-01"), ("resource", "https://x/")];
        let (system, resource) = resolve(&shared, &query(&base)).unwrap();
        assert_eq!(system.client_id, shared.config.managed_identity_client_id);
        assert_eq!(resource, "https://x/");

        let by_client = [
            &base[..],
            &[("client_id", "aaaa1111-0000-4000-8000-000000000001")],
        ]
        .concat();
        let (ua, _) = resolve(&shared, &query(&by_client)).unwrap();
        assert!(
            ua.resource_id
                .ends_with("/userAssignedIdentities/emulator-uami-aaaa1111")
        );
        let by_oid = [&base[..], &[("object_id", ua.object_id.as_str())]].concat();
        assert_eq!(resolve(&shared, &query(&by_oid)).unwrap().0, ua);
        let by_res = [&base[..], &[("msi_res_id", ua.resource_id.as_str())]].concat();
        assert_eq!(resolve(&shared, &query(&by_res)).unwrap().0, ua);

        let unknown = [&base[..], &[("client_id", "nope")]].concat();
        assert_eq!(
            resolve(&shared, &query(&unknown)).unwrap_err(),
            MsiError::IdentityNotFound
        );
        assert_eq!(
            resolve(&shared, &query(&[("api-version", "1")])).unwrap_err(),
            MsiError::Missing("resource")
        );
        assert_eq!(
            resolve(&shared, &query(&[])).unwrap_err(),
            MsiError::Missing("api-version")
        );
    }
}
