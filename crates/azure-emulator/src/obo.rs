//! The on-behalf-of grant: a confidential client exchanges a user's token for one to another
//! resource, carrying the user's identity.
//!
//! Source of the protocol: Microsoft Learn, "Microsoft identity platform and OAuth 2.0
//! On-Behalf-Of flow": `POST /{tenant}/oauth2/v2.0/token` with `grant_type =
//! urn:ietf:params:oauth:grant-type:jwt-bearer`, `requested_token_use = on_behalf_of`,
//! `assertion` (a token whose `aud` is the calling app), `scope`, `client_id` and the client's
//! credential (a secret, a certificate assertion, or a federated credential). The token issued
//! is in the resource's format (v1.0 for Azure AI services), with the user's `oid` and `tid`,
//! the app as `appid`, the delegated permissions in `scp`, and no `idtyp` (a user token). No
//! refresh token is issued (the emulator has no refresh grant), even for `offline_access`.
//!
//! The order of the checks: parameters, scope syntax, the client, the user assertion, then the
//! faults a test switched on (consent, Conditional Access), then delegated-permission consent.

use std::collections::HashMap;

use axum::response::Response;
use http::HeaderMap;
use serde_json::{Map, Value};

use super::client_auth::{self, Client, GrantKind, read_jwt, string};
use super::cloud::same_audience;
use super::entra::{self, EntraError, entra_instant};
use super::faults::OboFault;
use super::keys::{self, Grant, Rejected, TokenVersion};
use super::state::{ClientAuthKind, OboRequest, Shared};

/// OIDC scopes a token request may add; they name no resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];

/// Claims of the user carried from the assertion into the delegated token (v1.0 names).
const CARRIED_CLAIMS: [&str; 6] = [
    "name",
    "upn",
    "unique_name",
    "given_name",
    "family_name",
    "amr",
];

/// The resource and the delegated permissions a `scope` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requested {
    /// `https://cognitiveservices.azure.com`.
    resource: String,
    /// Named permissions; `None` for `{resource}/.default` (every consented one).
    permissions: Option<Vec<String>>,
}

/// What the exchange learned of the user.
struct User {
    oid: String,
    tid: String,
    carried: Map<String, Value>,
}

/// Answers an on-behalf-of request and records its non-secret facts.
pub(crate) fn on_behalf_of(
    shared: &Shared,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
    endpoints: &[String],
    correlation: Option<&str>,
) -> Response {
    let mut seen = OboRequest {
        tenant: tenant.to_owned(),
        client_id: form.get("client_id").cloned(),
        client_auth: None,
        grant_type: entra::JWT_BEARER_GRANT.to_owned(),
        requested_token_use: form.get("requested_token_use").cloned(),
        scope: form.get("scope").cloned(),
        user_oid: None,
        status: 200,
        error_code: None,
    };
    let response = match exchange(shared, tenant, form, headers, endpoints, &mut seen) {
        Ok(response) => response,
        Err(error) => {
            seen.status = error.status();
            seen.error_code = Some(error.code());
            entra::error_response(&error, correlation)
        }
    };
    shared.record_obo(seen);
    response
}

fn exchange(
    shared: &Shared,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
    endpoints: &[String],
    seen: &mut OboRequest,
) -> Result<Response, EntraError> {
    if !shared.tenant_exists(tenant) {
        return Err(EntraError::TenantNotFound {
            tenant: tenant.to_owned(),
        });
    }
    let tenant = entra::canonical_tenant(shared, tenant);
    let required = |name: &'static str| {
        form.get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or(EntraError::MissingParameter(name))
    };
    if required("requested_token_use")? != "on_behalf_of" {
        return Err(EntraError::InvalidParameter("requested_token_use"));
    }
    let assertion = required("assertion")?;
    let requested = requested_scope(required("scope")?)?;
    let client = client_auth::authenticate(
        shared,
        tenant,
        form,
        headers,
        endpoints,
        GrantKind::OnBehalfOf,
    )?;
    seen.client_id = Some(client.client_id.clone());
    seen.client_auth = client.kind;
    let Some(app) = client.app.clone() else {
        return Err(EntraError::AppNotFound {
            client_id: client.client_id,
            tenant: tenant.to_owned(),
        });
    };
    // A test's "the app's credential stopped working" applies before the user is looked at.
    if let Some(OboFault::InvalidClient) = shared.obo_fault(&client.client_id, None) {
        return Err(refused_client(&client));
    }
    let user = user_assertion(shared, tenant, &app, assertion)?;
    seen.user_oid = Some(user.oid.clone());
    if let Some(fault) = shared.obo_fault(&client.client_id, Some(&user.oid)) {
        return Err(fault_error(&fault, &client, &app.display_name, &requested));
    }
    let scp = match &requested.permissions {
        None => app.delegated_scopes.clone(),
        Some(named) => {
            if !named.iter().all(|p| app.delegated_scopes.contains(p)) {
                return Err(EntraError::ConsentRequired {
                    client_id: client.client_id,
                    app_name: app.display_name,
                });
            }
            named.clone()
        }
    };
    let lifetime = shared.token_lifetime_secs();
    let grant = Grant {
        version: TokenVersion::V1,
        cloud: shared.config.cloud,
        tenant_id: user.tid,
        aud: requested.resource.clone(),
        lifetime_secs: lifetime,
        // `sub` is pairwise: the same user has another `sub` for every application. Source:
        // Microsoft Learn, "Access token claims reference" (`sub`).
        sub: Some(keys::derived_uuid(&format!(
            "sub:{}:{}",
            user.oid, client.client_id
        ))),
        oid: user.oid,
        appid: client.client_id.clone(),
        app_acr: client.acr(),
        scp: Some(scp.join(" ")),
        epoch: shared.revocation_epoch(),
        extra: user.carried,
        ..Grant::default()
    };
    let granted = scp
        .iter()
        .map(|p| format!("{}/{p}", requested.resource))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(entra::v2_token_response(
        shared.issue(&grant),
        lifetime,
        Some(granted),
    ))
}

/// Parses `scope`: one resource's `/.default` or named permissions, plus OIDC scopes.
fn requested_scope(scope: &str) -> Result<Requested, EntraError> {
    let invalid = || EntraError::OboInvalidScope {
        scope: scope.to_owned(),
    };
    let mut resource: Option<String> = None;
    let mut named = Vec::new();
    let mut default = false;
    for item in scope
        .split_whitespace()
        .filter(|s| !OIDC_SCOPES.contains(&s.to_ascii_lowercase().as_str()))
    {
        let (res, permission) = item
            .rsplit_once('/')
            .filter(|(r, p)| r.contains("://") && !p.is_empty())
            .ok_or_else(invalid)?;
        let res = res.trim_end_matches('/');
        if res.ends_with(':') || res.ends_with("://") || res.is_empty() {
            return Err(invalid());
        }
        match &resource {
            Some(known) if !same_audience(known, res) => {
                return Err(EntraError::MultipleResources {
                    scope: scope.to_owned(),
                });
            }
            Some(_) => {}
            None => resource = Some(res.to_owned()),
        }
        if permission == ".default" {
            default = true;
        } else {
            named.push(permission.to_owned());
        }
    }
    let resource = resource.ok_or_else(invalid)?;
    Ok(Requested {
        resource,
        permissions: (!default).then_some(named),
    })
}

/// Checks the user assertion: a JWT signed by the emulator's current key, valid now, issued
/// for this tenant, for this app, and a user's (delegated) token.
fn user_assertion(
    shared: &Shared,
    tenant: &str,
    app: &super::apps::App,
    assertion: &str,
) -> Result<User, EntraError> {
    let (header, claims) = read_jwt(assertion).ok_or(EntraError::UserAssertionMalformed)?;
    let kid = string(&header, "kid")
        .or_else(|| string(&header, "x5t"))
        .unwrap_or_default();
    if let Err(rejected) = shared.signing_key().verify_claims(assertion) {
        return Err(match rejected {
            Rejected::UnknownKid => EntraError::UserAssertionKeyNotFound { kid },
            Rejected::Invalid(_) => EntraError::UserAssertionBadSignature { kid },
            Rejected::Expired | Rejected::NotYetValid => EntraError::UserAssertionTimeRange {
                now: entra_instant(keys::now_unix()),
                exp: entra_instant(claims.get("exp").and_then(Value::as_i64).unwrap_or(0)),
            },
        });
    }
    let issuer = string(&claims, "iss").unwrap_or_default();
    let cloud = shared.config.cloud;
    let issuers = [
        format!("{}/{tenant}/", cloud.v1_issuer_host()),
        format!("{}/{tenant}/v2.0", cloud.authority_host()),
    ];
    if !issuers.iter().any(|i| i.eq_ignore_ascii_case(&issuer)) {
        return Err(EntraError::UserAssertionIssuer {
            issuer,
            tenant: tenant.to_owned(),
        });
    }
    let audience = client_auth::audiences(&claims)
        .into_iter()
        .next()
        .unwrap_or_default();
    if !app.is_audience(&audience) {
        return Err(EntraError::UserAssertionAudience {
            audience,
            client_id: app.client_id.clone(),
            app_name: app.display_name.clone(),
        });
    }
    // Source: the On-Behalf-Of page, "Client limitations" (the flow works for user principals
    // only); app-only tokens carry `roles` but no `scp`, and `idtyp: app` when asked for.
    let app_only =
        string(&claims, "idtyp").as_deref() == Some("app") || !claims.contains_key("scp");
    if app_only {
        return Err(EntraError::AppOnlyAssertion {
            client_id: app.client_id.clone(),
        });
    }
    let oid = string(&claims, "oid")
        .or_else(|| string(&claims, "sub"))
        .unwrap_or_default();
    let tid = string(&claims, "tid").unwrap_or_else(|| tenant.to_owned());
    let carried = CARRIED_CLAIMS
        .iter()
        .filter_map(|name| claims.get(*name).map(|v| ((*name).to_owned(), v.clone())))
        .collect();
    Ok(User { oid, tid, carried })
}

fn fault_error(
    fault: &OboFault,
    client: &Client,
    app_name: &str,
    requested: &Requested,
) -> EntraError {
    match fault {
        OboFault::ConsentRequired => EntraError::ConsentRequired {
            client_id: client.client_id.clone(),
            app_name: app_name.to_owned(),
        },
        OboFault::MfaRequired { capolids } => EntraError::MfaRequired {
            resource: requested.resource.clone(),
            claims: claims_challenge(capolids),
        },
        OboFault::MfaEnrollmentRequired { capolids } => EntraError::MfaEnrollmentRequired {
            resource: requested.resource.clone(),
            claims: claims_challenge(capolids),
        },
        OboFault::InvalidClient => refused_client(client),
    }
}

/// The refusal of a client whose credential Entra no longer takes.
fn refused_client(client: &Client) -> EntraError {
    match client.kind {
        Some(ClientAuthKind::Secret) | None => EntraError::InvalidSecret {
            client_id: client.client_id.clone(),
        },
        Some(ClientAuthKind::Certificate | ClientAuthKind::FederatedCredential) => {
            EntraError::ClientAssertionBadSignature {
                thumbprint: String::new(),
            }
        }
    }
}

/// A Conditional Access claims challenge: `{"access_token":{"capolids":{"essential":true,
/// "values":[…]}}}`. Source: Microsoft Learn, "Claims challenges, claims requests and client
/// capabilities" (`capolids`); the On-Behalf-Of page's example carries the same shape.
pub(crate) fn claims_challenge(capolids: &[String]) -> String {
    let values: Vec<String> = if capolids.is_empty() {
        vec![keys::derived_uuid("emulator:conditional-access:mfa")]
    } else {
        capolids.to_vec()
    };
    serde_json::json!({ "access_token": { "capolids": { "essential": true, "values": values } } })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_one_resource() {
        let r =
            requested_scope("https://cognitiveservices.azure.com/.default offline_access").unwrap();
        assert_eq!(r.resource, "https://cognitiveservices.azure.com");
        assert_eq!(r.permissions, None);
        let r = requested_scope("https://ai.azure.com/user_impersonation openid").unwrap();
        assert_eq!(r.resource, "https://ai.azure.com");
        assert_eq!(r.permissions, Some(vec!["user_impersonation".to_owned()]));
        let r = requested_scope("api://my-api/read api://my-api/write").unwrap();
        assert_eq!(
            r.permissions,
            Some(vec!["read".to_owned(), "write".to_owned()])
        );
        assert_eq!(
            requested_scope("https://a.example/.default https://b.example/.default")
                .unwrap_err()
                .code(),
            700022
        );
        for bad in [
            "openid",
            "User.Read",
            "https://x/",
            "/.default",
            "https:///.default",
        ] {
            assert_eq!(requested_scope(bad).unwrap_err().code(), 70011, "{bad}");
        }
    }

    #[test]
    fn claims_challenges_name_policies() {
        let c: Value = serde_json::from_str(&claims_challenge(&["p1".to_owned()])).unwrap();
        assert_eq!(
            c,
            serde_json::json!({"access_token":{"capolids":{"essential":true,"values":["p1"]}}})
        );
        let c: Value = serde_json::from_str(&claims_challenge(&[])).unwrap();
        assert_eq!(
            c["access_token"]["capolids"]["values"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
