//! Entra ID: the client-credentials token endpoints, OIDC metadata, instance discovery and JWKS.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use super::Ctx;
use super::faults;
use super::keys::{self, Grant, TokenVersion};
use super::respond;
use super::samples::{AzureSample, SampleContext};
use super::state::{Shared, TokenEndpoint};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Tenants that are not a directory: metadata for them has the `{tenantid}` placeholder.
const MULTI_TENANT: [&str; 3] = ["common", "organizations", "consumers"];

/// An Entra error answer, with its real AADSTS text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntraError {
    TenantNotFound {
        tenant: String,
    },
    /// `TenantNotFound` as the metadata endpoints word it (`invalid_tenant`).
    MetadataTenantNotFound {
        tenant: String,
    },
    AppNotFound {
        client_id: String,
        tenant: String,
    },
    InvalidSecret {
        client_id: String,
    },
    SecretExpired {
        client_id: String,
    },
    MalformedAssertion,
    MissingParameter(&'static str),
    InvalidScope {
        scope: String,
    },
    UnsupportedGrant {
        grant: String,
    },
    NoCredential,
    /// The identity platform is down (identity fault `Down`).
    Unavailable,
    /// A scripted `IdentityFault::Error`.
    Scripted {
        status: u16,
        code: u32,
        client_id: String,
        tenant: String,
    },
}

/// Whether a token request came to the v1 (`resource`) or the v2 (`scope`) endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    V1,
    V2,
}

/// Entra's error body, fields in Entra's order.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: &'a str,
    trace_id: &'a str,
    correlation_id: &'a str,
    error_uri: String,
}

#[derive(Serialize)]
struct V2TokenBody {
    token_type: &'static str,
    expires_in: i64,
    ext_expires_in: i64,
    access_token: String,
}

#[derive(Serialize)]
struct V1TokenBody {
    token_type: &'static str,
    expires_in: String,
    ext_expires_in: String,
    expires_on: String,
    not_before: String,
    resource: String,
    access_token: String,
}

impl EntraError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            EntraError::TenantNotFound { .. }
            | EntraError::MetadataTenantNotFound { .. }
            | EntraError::AppNotFound { .. }
            | EntraError::MalformedAssertion
            | EntraError::MissingParameter(_)
            | EntraError::InvalidScope { .. }
            | EntraError::UnsupportedGrant { .. } => 400,
            EntraError::InvalidSecret { .. }
            | EntraError::SecretExpired { .. }
            | EntraError::NoCredential => 401,
            EntraError::Unavailable => 503,
            EntraError::Scripted { status, .. } => *status,
        }
    }

    pub(crate) fn code(&self) -> u32 {
        match self {
            EntraError::TenantNotFound { .. } | EntraError::MetadataTenantNotFound { .. } => 90002,
            EntraError::AppNotFound { .. } => 700016,
            EntraError::InvalidSecret { .. } => 7000215,
            EntraError::SecretExpired { .. } => 7000222,
            EntraError::MalformedAssertion => 50027,
            EntraError::MissingParameter(_) => 900144,
            EntraError::InvalidScope { .. } => 1002012,
            EntraError::UnsupportedGrant { .. } => 70003,
            EntraError::NoCredential => 7000216,
            EntraError::Unavailable => 90033,
            EntraError::Scripted { code, .. } => *code,
        }
    }

    /// The OAuth `error` string.
    pub(crate) fn error(&self) -> &'static str {
        match self {
            EntraError::TenantNotFound { .. }
            | EntraError::MalformedAssertion
            | EntraError::MissingParameter(_) => "invalid_request",
            EntraError::MetadataTenantNotFound { .. } => "invalid_tenant",
            EntraError::AppNotFound { .. } => "unauthorized_client",
            EntraError::InvalidSecret { .. }
            | EntraError::SecretExpired { .. }
            | EntraError::NoCredential => "invalid_client",
            EntraError::InvalidScope { .. } => "invalid_scope",
            EntraError::UnsupportedGrant { .. } => "unsupported_grant_type",
            EntraError::Unavailable => "temporarily_unavailable",
            EntraError::Scripted { status, .. } => match status {
                401 => "invalid_client",
                429 | 503 => "temporarily_unavailable",
                500..=599 => "server_error",
                _ => "invalid_request",
            },
        }
    }

    /// `AADSTS<code>: <text>`, without the trace suffix.
    pub(crate) fn message(&self) -> String {
        let text = match self {
            EntraError::TenantNotFound { tenant } | EntraError::MetadataTenantNotFound { tenant } => format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
            EntraError::AppNotFound { client_id, tenant } => format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
            EntraError::InvalidSecret { client_id } => format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
            EntraError::SecretExpired { client_id } => format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
            EntraError::MalformedAssertion => "JWT token is invalid or malformed.".to_owned(),
            EntraError::MissingParameter(name) => {
                format!("The request body must contain the following parameter: '{name}'.")
            }
            EntraError::InvalidScope { scope } => format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
            EntraError::UnsupportedGrant { grant } => {
                format!("The app requested an unsupported grant type '{grant}'.")
            }
            EntraError::NoCredential => "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".to_owned(),
            EntraError::Unavailable => {
                "A transient error has occurred. Please try again.".to_owned()
            }
            EntraError::Scripted {
                code,
                client_id,
                tenant,
                ..
            } => scripted_text(*code, client_id, tenant),
        };
        format!("AADSTS{}: {text}", self.code())
    }
}

/// The real text for a scripted code when the emulator knows it, else a plain one.
fn scripted_text(code: u32, client_id: &str, tenant: &str) -> String {
    let known = match code {
        90002 => EntraError::TenantNotFound {
            tenant: tenant.to_owned(),
        },
        700016 => EntraError::AppNotFound {
            client_id: client_id.to_owned(),
            tenant: tenant.to_owned(),
        },
        7000215 => EntraError::InvalidSecret {
            client_id: client_id.to_owned(),
        },
        7000222 => EntraError::SecretExpired {
            client_id: client_id.to_owned(),
        },
        50027 => EntraError::MalformedAssertion,
        7000216 => EntraError::NoCredential,
        90033 => EntraError::Unavailable,
        _ => return "The emulator was scripted to fail this token request.".to_owned(),
    };
    let message = known.message();
    message
        .split_once(": ")
        .map_or(message.clone(), |(_, text)| text.to_owned())
}

/// The Entra routes of the main listener.
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(metadata_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(metadata_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/discovery/{what}", get(discovery))
}

/// Entra's error answer: body, `x-ms-request-id`, no caching.
pub(crate) fn error_response(error: &EntraError, correlation_id: Option<&str>) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = correlation_id
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let timestamp = entra_timestamp(OffsetDateTime::now_utc());
    let body = ErrorBody {
        error: error.error(),
        error_description: format!(
            "{} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
            error.message()
        ),
        error_codes: [error.code()],
        timestamp: &timestamp,
        trace_id: &trace_id,
        correlation_id: &correlation_id,
        error_uri: format!(
            "https://login.microsoftonline.com/error?code={}",
            error.code()
        ),
    };
    let mut response = respond::json(error.status(), to_json(&body));
    respond::set_header(&mut response, "x-ms-request-id", &trace_id);
    respond::set_header(&mut response, "cache-control", "no-store, no-cache");
    response
}

async fn token_v2(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(&ctx.shared, &tenant, &headers, &body, Flavor::V2).await
}

async fn token_v1(
    State(ctx): State<Ctx>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(&ctx.shared, &tenant, &headers, &body, Flavor::V1).await
}

async fn token(
    shared: &Shared,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    flavor: Flavor,
) -> Response {
    shared.count_token_request(TokenEndpoint::Entra);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let correlation = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| uuid::Uuid::parse_str(v).is_ok());
    let client_hint = form.get("client_id").map_or("", String::as_str);
    if let Some(response) = faults::apply_identity(
        shared,
        TokenEndpoint::Entra,
        client_hint,
        tenant,
        correlation,
    )
    .await
    {
        return response;
    }
    match client_credentials(shared, tenant, &form, headers, flavor) {
        Ok(response) => response,
        Err(error) => error_response(&error, correlation),
    }
}

fn client_credentials(
    shared: &Shared,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
    flavor: Flavor,
) -> Result<Response, EntraError> {
    if !shared.tenant_exists(tenant) {
        return Err(EntraError::TenantNotFound {
            tenant: tenant.to_owned(),
        });
    }
    let tenant = if tenant.eq_ignore_ascii_case(&shared.config.tenant_id) {
        shared.config.tenant_id.as_str()
    } else {
        tenant
    };
    let grant_type = form
        .get("grant_type")
        .ok_or(EntraError::MissingParameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraError::UnsupportedGrant {
            grant: grant_type.clone(),
        });
    }
    let aud = match flavor {
        Flavor::V2 => audience_of_scope(form.get("scope").map(String::as_str))?,
        Flavor::V1 => {
            let resource = form
                .get("resource")
                .map(|r| r.trim().trim_end_matches('/'))
                .filter(|r| !r.is_empty())
                .ok_or(EntraError::MissingParameter("resource"))?;
            resource.to_owned()
        }
    };
    let (client_id, acr) = authenticate_client(shared, tenant, form, headers)?;
    let lifetime = shared.token_lifetime_secs();
    let grant = Grant {
        version: TokenVersion::V1,
        cloud: shared.config.cloud,
        tenant_id: tenant.to_owned(),
        aud: aud.clone(),
        lifetime_secs: lifetime,
        not_before_secs: 0,
        oid: keys::derived_uuid(&format!("sp:{tenant}:{client_id}")),
        appid: client_id,
        app_acr: acr,
        roles: Vec::new(),
        scp: None,
        mirid: None,
        epoch: shared.revocation_epoch(),
        kid: None,
        bad_signature: false,
    };
    let now = keys::now_unix();
    let access_token = shared.issue(&grant);
    let expires_in = if lifetime > 1 { lifetime - 1 } else { lifetime };
    let body = match flavor {
        Flavor::V2 => to_json(&V2TokenBody {
            token_type: "Bearer",
            expires_in,
            ext_expires_in: expires_in,
            access_token,
        }),
        Flavor::V1 => to_json(&V1TokenBody {
            token_type: "Bearer",
            expires_in: expires_in.to_string(),
            ext_expires_in: expires_in.to_string(),
            expires_on: now.saturating_add(lifetime).to_string(),
            not_before: now.to_string(),
            resource: aud,
            access_token,
        }),
    };
    let mut response = respond::json(200, body);
    respond::set_header(&mut response, "cache-control", "no-store, no-cache");
    respond::set_header(&mut response, "pragma", "no-cache");
    Ok(response)
}

/// `https://x/.default` → `https://x`; anything else is Entra's invalid-scope error.
fn audience_of_scope(scope: Option<&str>) -> Result<String, EntraError> {
    let scope = scope
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(EntraError::MissingParameter("scope"))?;
    let invalid = || EntraError::InvalidScope {
        scope: scope.to_owned(),
    };
    let mut scopes = scope.split_whitespace();
    let (Some(only), None) = (scopes.next(), scopes.next()) else {
        return Err(invalid());
    };
    only.strip_suffix("/.default")
        .map(|aud| aud.trim_end_matches('/'))
        .filter(|aud| !aud.is_empty())
        .map(str::to_owned)
        .ok_or_else(invalid)
}

/// Checks the client's credential; returns its client id and `appidacr`.
fn authenticate_client(
    shared: &Shared,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(String, &'static str), EntraError> {
    let basic = basic_credentials(headers);
    let form_client = form.get("client_id").filter(|c| !c.is_empty()).cloned();
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(EntraError::MissingParameter("client_assertion_type"));
        }
        let claims =
            crate::jwt::claims_unverified(assertion).map_err(|_| EntraError::MalformedAssertion)?;
        // Workload identity: any well-formed assertion is accepted for any client.
        let client_id = form_client
            .or(claims.sub)
            .ok_or(EntraError::MissingParameter("client_id"))?;
        return Ok((client_id, "2"));
    }
    let secret = form
        .get("client_secret")
        .cloned()
        .or_else(|| basic.as_ref().map(|(_, s)| s.clone()));
    let client_id = form_client
        .or_else(|| basic.map(|(c, _)| c))
        .ok_or(EntraError::MissingParameter("client_id"))?;
    let Some(secret) = secret else {
        return Err(EntraError::NoCredential);
    };
    let app = shared
        .app(&client_id)
        .filter(|app| app.tenant_id.eq_ignore_ascii_case(tenant))
        .ok_or_else(|| EntraError::AppNotFound {
            client_id: client_id.clone(),
            tenant: tenant.to_owned(),
        })?;
    if app.expired {
        return Err(EntraError::SecretExpired { client_id });
    }
    if !app.secret_matches(&secret) {
        return Err(EntraError::InvalidSecret { client_id });
    }
    Ok((client_id, "1"))
}

/// `client_secret_basic`: `Authorization: Basic base64(client_id:secret)`, both form-encoded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
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

async fn metadata_v2(State(ctx): State<Ctx>, Path(tenant): Path<String>) -> Response {
    metadata(&ctx.shared, &tenant, Flavor::V2)
}

async fn metadata_v1(State(ctx): State<Ctx>, Path(tenant): Path<String>) -> Response {
    metadata(&ctx.shared, &tenant, Flavor::V1)
}

fn metadata(shared: &Shared, tenant: &str, flavor: Flavor) -> Response {
    let multi = MULTI_TENANT.iter().any(|m| m.eq_ignore_ascii_case(tenant));
    if !multi && !shared.tenant_exists(tenant) {
        return error_response(
            &EntraError::MetadataTenantNotFound {
                tenant: tenant.to_owned(),
            },
            None,
        );
    }
    let cloud = shared.config.cloud;
    let authority = cloud.authority_host();
    let tid = if multi { "{tenantid}" } else { tenant };
    let instance = authority.trim_start_matches("https://login.");
    let body = match flavor {
        Flavor::V2 => serde_json::json!({
            "token_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{authority}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{authority}/{tid}/v2.0"),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": format!("{authority}/{tenant}/kerberos"),
            "tenant_region_scope": "NA",
            "cloud_instance_name": instance,
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }),
        Flavor::V1 => serde_json::json!({
            "token_endpoint": format!("{authority}/{tenant}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{authority}/common/discovery/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": format!("{}/{tid}/", cloud.v1_issuer_host()),
            "microsoft_multi_refresh_token": true,
            "authorization_endpoint": format!("{authority}/{tenant}/oauth2/authorize"),
            "device_authorization_endpoint": format!("{authority}/{tenant}/oauth2/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{authority}/{tenant}/oauth2/logout"),
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "given_name", "family_name", "nickname"],
            "check_session_iframe": format!("{authority}/{tenant}/oauth2/checksession"),
            "userinfo_endpoint": format!("{authority}/{tenant}/openid/userinfo"),
            "kerberos_endpoint": format!("{authority}/{tenant}/kerberos"),
            "tenant_region_scope": "NA",
            "cloud_instance_name": instance,
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }),
    };
    respond::json_value(200, &body)
}

async fn jwks(State(ctx): State<Ctx>) -> Response {
    respond::json_value(200, &ctx.shared.signing_key().jwks())
}

/// `/{tenant}/discovery/keys` (v1 JWKS) and `/common/discovery/instance` (MSAL's instance
/// discovery).
async fn discovery(
    State(ctx): State<Ctx>,
    Path((tenant, what)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    match what.as_str() {
        "keys" => respond::json_value(200, &ctx.shared.signing_key().jwks()),
        "instance" if tenant.eq_ignore_ascii_case("common") => {
            instance_discovery(&ctx.shared, uri.query().unwrap_or(""))
        }
        _ => respond::sample(AzureSample::ResourceNotFound404, &SampleContext::default()),
    }
}

fn instance_discovery(shared: &Shared, query: &str) -> Response {
    let cloud = shared.config.cloud;
    let authority = cloud.authority_host();
    let host = cloud.login_host();
    let tenant = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "authorization_endpoint")
        .and_then(|(_, v)| url::Url::parse(&v).ok())
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next().map(str::to_owned))
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "common".to_owned());
    let aliases = cloud.login_aliases();
    respond::json_value(
        200,
        &serde_json::json!({
            "tenant_discovery_endpoint": format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration"),
            "api-version": "1.1",
            "metadata": [{
                "preferred_network": host,
                "preferred_cache": host,
                "aliases": aliases,
            }],
        }),
    )
}

/// Entra's timestamp format: `2024-05-13 10:49:38Z`.
fn entra_timestamp(at: OffsetDateTime) -> String {
    at.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_must_be_one_dot_default() {
        assert_eq!(
            audience_of_scope(Some("https://cognitiveservices.azure.com/.default")).unwrap(),
            "https://cognitiveservices.azure.com"
        );
        assert_eq!(
            audience_of_scope(Some("https://ai.azure.com//.default")).unwrap(),
            "https://ai.azure.com"
        );
        assert_eq!(
            audience_of_scope(None),
            Err(EntraError::MissingParameter("scope"))
        );
        for bad in ["https://x", "/.default", "a/.default b/.default"] {
            assert!(matches!(
                audience_of_scope(Some(bad)),
                Err(EntraError::InvalidScope { .. })
            ));
        }
    }

    #[test]
    fn error_texts_are_entras() {
        let e = EntraError::InvalidSecret {
            client_id: "abc".into(),
        };
        assert_eq!(
            e.message(),
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'abc'."
        );
        let scripted = EntraError::Scripted {
            status: 401,
            code: 7000222,
            client_id: "abc".into(),
            tenant: "t".into(),
        };
        assert!(scripted.message().starts_with(
            "AADSTS7000222: The provided client secret keys for app 'abc' are expired."
        ));
        assert_eq!(scripted.error(), "invalid_client");
        let other = EntraError::Scripted {
            status: 500,
            code: 12345,
            client_id: String::new(),
            tenant: String::new(),
        };
        assert_eq!(other.error(), "server_error");
        assert!(other.message().starts_with("AADSTS12345: "));
    }

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
    fn timestamps_look_like_entras() {
        let t = OffsetDateTime::from_unix_timestamp(1_715_597_378).unwrap();
        assert_eq!(entra_timestamp(t), "2024-05-13 10:49:38Z");
    }
}
