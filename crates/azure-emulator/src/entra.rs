//! Entra ID: the token endpoints (client credentials, on-behalf-of), OIDC metadata, instance
//! discovery and JWKS.
//!
//! Error bodies follow Microsoft Learn, "Microsoft Entra authentication and authorization error
//! codes" (`error`, `error_description` = `AADSTS<code>: <text> Trace ID: … Correlation ID: …
//! Timestamp: …`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`), plus
//! `suberror` and `claims` where Entra sends them. Entra's current answers separate the trace
//! suffix with spaces (older ones, and the docs' samples, with `\r\n`).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use super::Ctx;
use super::client_auth::{self, GrantKind};
use super::cloud::same_audience;
use super::faults;
use super::keys::{self, Grant, TokenVersion};
use super::obo;
use super::respond;
use super::samples::{AzureSample, SampleContext};
use super::state::{Shared, TokenEndpoint};

/// The on-behalf-of grant type. Source: Microsoft Learn, "Microsoft identity platform and OAuth
/// 2.0 On-Behalf-Of flow".
pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

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
    // --- client authentication by assertion, and the on-behalf-of grant ---
    /// On-behalf-of without `client_secret` or `client_assertion`.
    NoClientCredential,
    /// A parameter with a value Entra does not take.
    InvalidParameter(&'static str),
    /// No registered certificate has the assertion's thumbprint (`x5t#S256` or `x5t`).
    CertificateNotFound {
        client_id: String,
        thumbprint: String,
    },
    /// The certificate is registered but the signature (or its `alg`) is wrong.
    ClientAssertionBadSignature {
        thumbprint: String,
    },
    /// The client assertion's `aud` is not this token endpoint.
    ClientAssertionAudience,
    /// The client assertion's `sub` is not its `iss`.
    ClientAssertionSubject,
    ClientAssertionClaimMissing(&'static str),
    /// Expired or not yet valid (times as Entra prints them).
    ClientAssertionTimeRange {
        now: String,
        nbf: String,
        exp: String,
    },
    FederatedIssuer {
        issuer: String,
    },
    FederatedSubject {
        subject: String,
    },
    FederatedAudience {
        audience: String,
    },
    /// The federated token's signing key is not in its issuer's keys.
    FederatedKeyNotFound {
        kid: String,
        issuer: String,
    },
    FederatedBadSignature,
    /// A user's token from an Entra issuer presented as a federated credential.
    FederatedUserToken,
    /// The user assertion is not a JWT.
    UserAssertionMalformed,
    UserAssertionKeyNotFound {
        kid: String,
    },
    UserAssertionBadSignature {
        kid: String,
    },
    UserAssertionIssuer {
        issuer: String,
        tenant: String,
    },
    UserAssertionTimeRange {
        now: String,
        exp: String,
    },
    UserAssertionAudience {
        audience: String,
        client_id: String,
        app_name: String,
    },
    /// An app-only token as the user assertion.
    AppOnlyAssertion {
        client_id: String,
    },
    OboInvalidScope {
        scope: String,
    },
    MultipleResources {
        scope: String,
    },
    ConsentRequired {
        client_id: String,
        app_name: String,
    },
    /// `claims` is the Conditional Access challenge (a JSON text).
    MfaRequired {
        resource: String,
        claims: String,
    },
    MfaEnrollmentRequired {
        resource: String,
        claims: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    suberror: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<&'a str>,
}

#[derive(Serialize)]
struct V2TokenBody {
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
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
            | EntraError::UnsupportedGrant { .. }
            | EntraError::InvalidParameter(_)
            | EntraError::ClientAssertionClaimMissing(_)
            | EntraError::UserAssertionMalformed
            | EntraError::UserAssertionKeyNotFound { .. }
            | EntraError::UserAssertionBadSignature { .. }
            | EntraError::UserAssertionIssuer { .. }
            | EntraError::UserAssertionTimeRange { .. }
            | EntraError::UserAssertionAudience { .. }
            | EntraError::AppOnlyAssertion { .. }
            | EntraError::OboInvalidScope { .. }
            | EntraError::MultipleResources { .. }
            | EntraError::ConsentRequired { .. }
            | EntraError::MfaRequired { .. }
            | EntraError::MfaEnrollmentRequired { .. } => 400,
            EntraError::InvalidSecret { .. }
            | EntraError::SecretExpired { .. }
            | EntraError::NoCredential
            | EntraError::NoClientCredential
            | EntraError::CertificateNotFound { .. }
            | EntraError::ClientAssertionBadSignature { .. }
            | EntraError::ClientAssertionAudience
            | EntraError::ClientAssertionSubject
            | EntraError::ClientAssertionTimeRange { .. }
            | EntraError::FederatedIssuer { .. }
            | EntraError::FederatedSubject { .. }
            | EntraError::FederatedAudience { .. }
            | EntraError::FederatedKeyNotFound { .. }
            | EntraError::FederatedBadSignature
            | EntraError::FederatedUserToken => 401,
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
            EntraError::NoClientCredential => 7000218,
            EntraError::InvalidParameter(_) => 90100,
            EntraError::CertificateNotFound { .. }
            | EntraError::ClientAssertionBadSignature { .. }
            | EntraError::FederatedBadSignature => 700027,
            EntraError::ClientAssertionAudience => 50012,
            EntraError::ClientAssertionSubject => 50048,
            EntraError::ClientAssertionClaimMissing(_) => 90014,
            EntraError::ClientAssertionTimeRange { .. } => 700024,
            EntraError::FederatedIssuer { .. } => 700211,
            EntraError::FederatedAudience { .. } => 700212,
            EntraError::FederatedSubject { .. } => 700213,
            EntraError::FederatedKeyNotFound { .. } => 7000272,
            EntraError::FederatedUserToken => 700229,
            EntraError::UserAssertionMalformed => 50027,
            EntraError::UserAssertionKeyNotFound { .. }
            | EntraError::UserAssertionBadSignature { .. }
            | EntraError::UserAssertionIssuer { .. } => 50013,
            EntraError::UserAssertionTimeRange { .. } => 500133,
            EntraError::UserAssertionAudience { .. } => 500131,
            EntraError::AppOnlyAssertion { .. } => 7000114,
            EntraError::OboInvalidScope { .. } => 70011,
            EntraError::MultipleResources { .. } => 700022,
            EntraError::ConsentRequired { .. } => 65001,
            EntraError::MfaRequired { .. } => 50076,
            EntraError::MfaEnrollmentRequired { .. } => 50079,
        }
    }

    /// `suberror`, where Entra sends one. Source: an AADSTS65001 answer quoted in
    /// MicrosoftDocs/azure-docs issue 39189 (`"suberror": "consent_required"`).
    fn suberror(&self) -> Option<&'static str> {
        matches!(self, EntraError::ConsentRequired { .. }).then_some("consent_required")
    }

    /// The Conditional Access claims challenge, where Entra sends one. Source: Microsoft Learn,
    /// "Microsoft identity platform and OAuth 2.0 On-Behalf-Of flow" (error response example).
    fn claims(&self) -> Option<&str> {
        match self {
            EntraError::MfaRequired { claims, .. }
            | EntraError::MfaEnrollmentRequired { claims, .. } => Some(claims),
            _ => None,
        }
    }

    /// The OAuth `error` string.
    pub(crate) fn error(&self) -> &'static str {
        match self {
            EntraError::TenantNotFound { .. }
            | EntraError::MalformedAssertion
            | EntraError::MissingParameter(_)
            | EntraError::InvalidParameter(_)
            | EntraError::ClientAssertionClaimMissing(_) => "invalid_request",
            EntraError::MetadataTenantNotFound { .. } => "invalid_tenant",
            EntraError::AppNotFound { .. } | EntraError::AppOnlyAssertion { .. } => {
                "unauthorized_client"
            }
            EntraError::InvalidSecret { .. }
            | EntraError::SecretExpired { .. }
            | EntraError::NoCredential
            | EntraError::NoClientCredential
            | EntraError::CertificateNotFound { .. }
            | EntraError::ClientAssertionBadSignature { .. }
            | EntraError::ClientAssertionAudience
            | EntraError::ClientAssertionSubject
            | EntraError::ClientAssertionTimeRange { .. }
            | EntraError::FederatedIssuer { .. }
            | EntraError::FederatedSubject { .. }
            | EntraError::FederatedAudience { .. }
            | EntraError::FederatedKeyNotFound { .. }
            | EntraError::FederatedBadSignature
            | EntraError::FederatedUserToken => "invalid_client",
            EntraError::UserAssertionMalformed
            | EntraError::UserAssertionKeyNotFound { .. }
            | EntraError::UserAssertionBadSignature { .. }
            | EntraError::UserAssertionIssuer { .. }
            | EntraError::UserAssertionTimeRange { .. }
            | EntraError::UserAssertionAudience { .. }
            | EntraError::ConsentRequired { .. } => "invalid_grant",
            EntraError::MfaRequired { .. } | EntraError::MfaEnrollmentRequired { .. } => {
                "interaction_required"
            }
            EntraError::InvalidScope { .. }
            | EntraError::OboInvalidScope { .. }
            | EntraError::MultipleResources { .. } => "invalid_scope",
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
            other => assertion_text(other),
        };
        format!("AADSTS{}: {text}", self.code())
    }
}

/// The texts of the client-assertion and on-behalf-of errors. Where a text is quoted from
/// Entra's answers, the source says where; the rest state the documented meaning of the code
/// (Microsoft Learn, "Microsoft Entra authentication and authorization error codes") in the
/// emulator's words.
fn assertion_text(error: &EntraError) -> String {
    const FIC_DOCS: &str =
        "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";
    match error {
        // Reference page, AADSTS7000218.
        EntraError::NoClientCredential => {
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned()
        }
        EntraError::InvalidParameter(name) => {
            format!("{name} parameter is empty or not valid.")
        }
        // Quoted from an answer in Azure/azure-sdk-for-net issue 27646.
        EntraError::CertificateNotFound {
            client_id,
            thumbprint,
        } => format!(
            "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        ),
        // Quoted from answers in AzureAD/microsoft-authentication-library-for-dotnet issue 1317.
        EntraError::ClientAssertionBadSignature { thumbprint } => format!(
            "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{thumbprint}']"
        ),
        EntraError::FederatedBadSignature => {
            "Client assertion failed signature validation.".to_owned()
        }
        // Quoted from AzureAD/azure-activedirectory-library-for-python issue 79.
        EntraError::ClientAssertionAudience => {
            "Client assertion audience claim does not match Realm issuer.".to_owned()
        }
        // Reference page, AADSTS50048.
        EntraError::ClientAssertionSubject => {
            "Subject mismatches Issuer claim in the client assertion.".to_owned()
        }
        EntraError::ClientAssertionClaimMissing(name) => format!(
            "The required field '{name}' is missing from the credential. Ensure that you have all the necessary parameters for the login request."
        ),
        // Quoted from AzureAD/microsoft-authentication-library-for-dotnet issue 4951.
        EntraError::ClientAssertionTimeRange { now, nbf, exp } => format!(
            "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {exp}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
        ),
        // Quoted from Azure/azure-workload-identity issue 1200.
        EntraError::FederatedIssuer { issuer } => format!(
            "No matching federated identity record found for presented assertion issuer '{issuer}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}"
        ),
        EntraError::FederatedSubject { subject } => format!(
            "No matching federated identity record found for presented assertion subject '{subject}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}"
        ),
        EntraError::FederatedAudience { audience } => format!(
            "No matching federated identity record found for presented assertion audience '{audience}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. {FIC_DOCS}"
        ),
        // Quoted from Azure/azure-workload-identity issue 1232.
        EntraError::FederatedKeyNotFound { kid, issuer } => format!(
            "The certificate with identifier {kid} used to sign the federated credential could not be found in the metadata of identity provider {issuer}. Please validate that your Identity Provider's metadata exposes the key used to sign the incoming token."
        ),
        // Reference page, AADSTS700229.
        EntraError::FederatedUserToken => "Only app-only tokens can be used as Federated Identity Credentials for Microsoft Entra issuer. Use an app-only access token (generated during a client credentials flow) instead of a user-delegated access token (representing a request coming from a user context).".to_owned(),
        EntraError::UserAssertionMalformed => "JWT token is invalid or malformed.".to_owned(),
        // Quoted from AzureAD/microsoft-authentication-library-for-dotnet issues 1317 and 2426.
        EntraError::UserAssertionKeyNotFound { kid } => format!(
            "Assertion failed signature validation. [Reason - The key was not found., Thumbprint of key used by client: '{kid}']"
        ),
        EntraError::UserAssertionBadSignature { kid } => format!(
            "Assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{kid}']"
        ),
        EntraError::UserAssertionIssuer { issuer, tenant } => format!(
            "Assertion is invalid: the token issuer '{issuer}' is not an issuer of tenant '{tenant}'."
        ),
        // Quoted from microsoftgraph/msgraph-sdk-dotnet issue 2551.
        EntraError::UserAssertionTimeRange { now, exp } => format!(
            "Assertion is not within its valid time range. Ensure that the access token is not expired before using it for user assertion, or request a new token. Current time: {now}, expiry time of assertion {exp}."
        ),
        // Quoted from OfficeDev/microsoft-teams-apps-company-communicator issue 214.
        EntraError::UserAssertionAudience {
            audience,
            client_id,
            app_name,
        } => format!(
            "Assertion audience does not match the Client app presenting the assertion. The audience in the assertion was '{audience}' and the expected audience is '{client_id}' or one of the Application Uris of this application with App ID '{client_id}'({app_name}). The downstream client must request a token for the expected audience (the application that made the OBO request) and this application should use that token as the assertion."
        ),
        // Quoted from AzureAD/microsoft-authentication-library-for-dotnet issue 2130.
        EntraError::AppOnlyAssertion { client_id } => format!(
            "Application '{client_id}' is not allowed to make application on-behalf-of calls."
        ),
        // Reference page, the sample error response (AADSTS70011).
        EntraError::OboInvalidScope { scope } => format!(
            "The provided value for the input parameter 'scope' isn't valid. The scope {scope} isn't valid."
        ),
        // Reference page, AADSTS700022.
        EntraError::MultipleResources { scope } => format!(
            "The provided value for the input parameter scope isn't valid because it contains more than one resource. The scope {scope} isn't valid."
        ),
        // Quoted from Azure-Samples/ms-identity-dotnet-advanced-token-cache issue 5.
        EntraError::ConsentRequired {
            client_id,
            app_name,
        } => format!(
            "The user or administrator has not consented to use the application with ID '{client_id}' named '{app_name}'. Send an interactive authorization request for this user and resource."
        ),
        // Quoted from AzureAD/microsoft-authentication-library-for-objc issue 57.
        EntraError::MfaRequired { resource, .. } => format!(
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '{resource}'."
        ),
        // The On-Behalf-Of flow page's error response example.
        EntraError::MfaEnrollmentRequired { resource, .. } => format!(
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must enroll in multifactor authentication to access '{resource}'."
        ),
        _ => "The request is not valid.".to_owned(),
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
        suberror: error.suberror(),
        claims: error.claims(),
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
    let on_behalf_of = form.get("grant_type").map(String::as_str) == Some(JWT_BEARER_GRANT)
        && flavor == Flavor::V2;
    if on_behalf_of {
        shared.count_obo_request();
    }
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
    let endpoints = token_endpoints(shared, tenant, headers);
    if on_behalf_of {
        return obo::on_behalf_of(shared, tenant, &form, headers, &endpoints, correlation);
    }
    match client_credentials(shared, tenant, &form, headers, flavor, &endpoints) {
        Ok(response) => response,
        Err(error) => error_response(&error, correlation),
    }
}

/// The URLs of this token endpoint a client assertion's `aud` may name: the cloud's (what Entra
/// documents: `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`, and the v1 form)
/// and the emulator's own, as the request reached it. Source: Microsoft Learn, "Microsoft
/// identity platform application authentication certificate credentials" (`aud`).
fn token_endpoints(shared: &Shared, tenant: &str, headers: &HeaderMap) -> Vec<String> {
    let mut bases = vec![shared.config.cloud.authority_host().to_owned()];
    if let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        bases.push(format!("http://{host}"));
    }
    bases
        .iter()
        .flat_map(|base| {
            [
                format!("{base}/{tenant}/oauth2/v2.0/token"),
                format!("{base}/{tenant}/oauth2/token"),
            ]
        })
        .collect()
}

/// A token answer of the v2 endpoint, not cached.
pub(crate) fn v2_token_response(
    access_token: String,
    lifetime: i64,
    scope: Option<String>,
) -> Response {
    let expires_in = if lifetime > 1 { lifetime - 1 } else { lifetime };
    let mut response = respond::json(
        200,
        to_json(&V2TokenBody {
            token_type: "Bearer",
            scope,
            expires_in,
            ext_expires_in: expires_in,
            access_token,
        }),
    );
    respond::set_header(&mut response, "cache-control", "no-store, no-cache");
    respond::set_header(&mut response, "pragma", "no-cache");
    response
}

/// The object id of an app's service principal in a tenant: the `oid` (and `sub`) of its
/// app-only tokens.
pub(crate) fn service_principal_oid(tenant: &str, client_id: &str) -> String {
    keys::derived_uuid(&format!("sp:{}:{client_id}", tenant.to_ascii_lowercase()))
}

/// Tenant ids are GUIDs compared ignoring case; the configured one is written as configured.
pub(crate) fn canonical_tenant<'a>(shared: &'a Shared, tenant: &'a str) -> &'a str {
    if tenant.eq_ignore_ascii_case(&shared.config.tenant_id) {
        shared.config.tenant_id.as_str()
    } else {
        tenant
    }
}

fn client_credentials(
    shared: &Shared,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
    flavor: Flavor,
    endpoints: &[String],
) -> Result<Response, EntraError> {
    if !shared.tenant_exists(tenant) {
        return Err(EntraError::TenantNotFound {
            tenant: tenant.to_owned(),
        });
    }
    let tenant = canonical_tenant(shared, tenant);
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
    let client = client_auth::authenticate(
        shared,
        tenant,
        form,
        headers,
        endpoints,
        GrantKind::ClientCredentials,
    )?;
    let lifetime = shared.token_lifetime_secs();
    let cloud = shared.config.cloud;
    // A token for the federated-credential audience is v2.0 (issuer `{authority}/{tenant}/v2.0`,
    // `sub` the service principal's object id): an app-only token another app can trust as a
    // federated credential. Source: Microsoft Learn, "Microsoft Entra authentication and
    // authorization error codes" (AADSTS700229: only app-only tokens for an Entra issuer).
    let exchange = same_audience(&aud, cloud.token_exchange_audience());
    let aud = if exchange {
        cloud.token_exchange_audience().to_owned()
    } else {
        aud
    };
    let grant = Grant {
        version: if exchange {
            TokenVersion::V2
        } else {
            TokenVersion::V1
        },
        cloud,
        tenant_id: tenant.to_owned(),
        aud: aud.clone(),
        lifetime_secs: lifetime,
        oid: service_principal_oid(tenant, &client.client_id),
        app_acr: client.acr(),
        roles: client.app.map(|app| app.roles).unwrap_or_default(),
        appid: client.client_id,
        epoch: shared.revocation_epoch(),
        ..Grant::default()
    };
    let now = keys::now_unix();
    let access_token = shared.issue(&grant);
    let expires_in = if lifetime > 1 { lifetime - 1 } else { lifetime };
    let body = match flavor {
        Flavor::V2 => return Ok(v2_token_response(access_token, lifetime, None)),
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

/// An instant as Entra prints it in AADSTS texts: `2024-05-28T06:01:42.0000000Z`.
pub(crate) fn entra_instant(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].0000000Z"
            ))
            .ok()
        })
        .unwrap_or_default()
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
    fn timestamps_look_like_entras() {
        let t = OffsetDateTime::from_unix_timestamp(1_715_597_378).unwrap();
        assert_eq!(entra_timestamp(t), "2024-05-13 10:49:38Z");
        assert_eq!(entra_instant(1_715_597_378), "2024-05-13T10:49:38.0000000Z");
    }
}
