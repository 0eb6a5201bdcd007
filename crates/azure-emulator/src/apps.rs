//! App registrations: the confidential clients the token endpoint knows, with their secrets,
//! certificates, federated identity credentials, exposed API identifiers and app roles.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use super::Cloud;
use super::certs::ParsedCertificate;

/// The delegated permission Azure AI services expose (`user_impersonation`), granted by default
/// to every registered app: what an on-behalf-of token for `.default` carries in `scp`.
pub const DEFAULT_DELEGATED_SCOPE: &str = "user_impersonation";

/// An application registration, as [`super::Emulator::register`] takes it (and, as JSON,
/// `POST /emulator/apps`). Only `tenant_id` and `client_id` are required; its tenant then exists.
/// `Debug` hides the secrets.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    pub tenant_id: String,
    pub client_id: String,
    /// Named in AADSTS65001; the client id by default.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Client secret values; any of them authenticates the app.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Certificates (PEM, or base64 of the DER) whose keys may sign client assertions.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Trusted external tokens (`federatedIdentityCredentials`).
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// The exposed API's identifiers (`identifierUris`) a user assertion's `aud` may name
    /// besides the client id; `["api://{client_id}"]` when empty.
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    /// App roles assigned to the app: the `roles` of its client-credentials tokens.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Delegated permissions consented for the app on the resources it calls on behalf of
    /// users: the `scp` of its on-behalf-of tokens. `["user_impersonation"]` when empty.
    #[serde(default)]
    pub delegated_scopes: Vec<String>,
}

/// A federated identity credential: the app trusts tokens with this `iss` and `sub` for one of
/// these audiences. Source: Microsoft Learn, "Workload identity federation" and "Configure an
/// application to trust a managed identity" (issuer, subject, audiences; matched exactly,
/// case-sensitively; "Federated identity credentials now use case-sensitive matching").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredential {
    #[serde(default)]
    pub name: Option<String>,
    pub issuer: String,
    pub subject: String,
    /// `["api://AzureADTokenExchange"]` by default.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

/// A registered app as the token endpoint uses it.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) display_name: String,
    secrets: Vec<String>,
    pub(crate) expired: bool,
    pub(crate) certificates: Vec<ParsedCertificate>,
    pub(crate) federated: Vec<FederatedCredential>,
    pub(crate) identifier_uris: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) delegated_scopes: Vec<String>,
}

impl fmt::Debug for AppRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppRegistration")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("display_name", &self.display_name)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("certificates", &self.certificates.len())
            .field("federated_credentials", &self.federated_credentials)
            .field("identifier_uris", &self.identifier_uris)
            .field("roles", &self.roles)
            .field("delegated_scopes", &self.delegated_scopes)
            .finish()
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secrets", &"<redacted>")
            .field("expired", &self.expired)
            .field("certificates", &self.certificates)
            .field("federated", &self.federated)
            .finish_non_exhaustive()
    }
}

impl AppRegistration {
    /// An app in `tenant_id` with no credential yet.
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        AppRegistration {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            ..AppRegistration::default()
        }
    }

    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// A certificate as PEM or base64 DER, e.g. [`super::TestCertificate::pem`].
    pub fn with_certificate(mut self, certificate: impl Into<String>) -> Self {
        self.certificates.push(certificate.into());
        self
    }

    pub fn with_federated_credential(mut self, credential: FederatedCredential) -> Self {
        self.federated_credentials.push(credential);
        self
    }

    pub fn with_roles<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Self {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }
}

impl FederatedCredential {
    /// Trusts `issuer`/`subject` for `api://AzureADTokenExchange`.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        FederatedCredential {
            name: None,
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: default_audiences(),
        }
    }

    /// A user-assigned managed identity as the credential: issuer
    /// `{authority}/{tenant}/v2.0`, subject the identity's object (principal) id, audience
    /// `api://AzureADTokenExchange` (or the cloud's equivalent). Source: Microsoft Learn,
    /// "Configure an application to trust a managed identity". The same form trusts another
    /// app's app-only tokens for that audience, with its service principal's object id
    /// ([`super::Emulator::service_principal_oid`]) as the subject.
    pub fn managed_identity(cloud: Cloud, tenant_id: &str, object_id: &str) -> Self {
        FederatedCredential {
            name: None,
            issuer: format!("{}/{tenant_id}/v2.0", cloud.authority_host()),
            subject: object_id.to_owned(),
            audiences: vec![cloud.token_exchange_audience().to_owned()],
        }
    }

    /// A Kubernetes service account: subject `system:serviceaccount:{namespace}:{name}`.
    /// Source: Microsoft Learn, "Use Microsoft Entra Workload ID with Azure Kubernetes Service".
    pub fn kubernetes(issuer: impl Into<String>, namespace: &str, service_account: &str) -> Self {
        FederatedCredential::new(
            issuer,
            format!("system:serviceaccount:{namespace}:{service_account}"),
        )
    }
}

impl App {
    /// Checks the certificates; an unreadable one is refused with the reason.
    pub(crate) fn from_registration(reg: AppRegistration) -> Result<App, String> {
        let certificates = reg
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                ParsedCertificate::parse(c).map_err(|e| format!("certificates[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identifier_uris = if reg.identifier_uris.is_empty() {
            vec![format!("api://{}", reg.client_id)]
        } else {
            reg.identifier_uris
        };
        let delegated_scopes = if reg.delegated_scopes.is_empty() {
            vec![DEFAULT_DELEGATED_SCOPE.to_owned()]
        } else {
            reg.delegated_scopes
        };
        Ok(App {
            display_name: reg.display_name.unwrap_or_else(|| reg.client_id.clone()),
            tenant_id: reg.tenant_id,
            client_id: reg.client_id,
            secrets: reg.secrets,
            expired: false,
            certificates,
            federated: reg.federated_credentials,
            identifier_uris,
            roles: reg.roles,
            delegated_scopes,
        })
    }

    pub(crate) fn has_secrets(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Whether `given` is one of the secrets, each compared in constant time.
    pub(crate) fn secret_matches(&self, given: &str) -> bool {
        self.secrets.iter().fold(false, |found, s| {
            found | bool::from(s.as_bytes().ct_eq(given.as_bytes()))
        })
    }

    /// Whether `aud` names this app: its client id or one of its identifier URIs (exactly,
    /// ignoring a trailing `/`). Source: AADSTS500131's text ("the expected audience is
    /// '{client id}' or one of the Application Uris of this application").
    pub(crate) fn is_audience(&self, aud: &str) -> bool {
        let aud = aud.strip_suffix('/').unwrap_or(aud);
        aud == self.client_id
            || self
                .identifier_uris
                .iter()
                .any(|u| u.strip_suffix('/').unwrap_or(u) == aud)
    }
}

fn default_audiences() -> Vec<String> {
    vec![Cloud::Public.token_exchange_audience().to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_get_entras_defaults_and_hide_secrets() {
        let app = App::from_registration(
            AppRegistration::new("t", "c1")
                .with_secret("s-one")
                .with_secret("s-two"),
        )
        .unwrap();
        assert!(app.secret_matches("s-two"));
        assert!(!app.secret_matches("s-thr"));
        assert_eq!(app.identifier_uris, ["api://c1"]);
        assert_eq!(app.delegated_scopes, ["user_impersonation"]);
        assert_eq!(app.display_name, "c1");
        assert!(app.is_audience("api://c1/") && app.is_audience("c1"));
        assert!(!app.is_audience("API://c1") && !app.is_audience("api://c2"));
        let reg = AppRegistration::new("t", "c1").with_secret("hidden-value");
        assert!(!format!("{reg:?}").contains("hidden-value"));
        assert!(!format!("{app:?}").contains("s-one"));
        let bad = AppRegistration::new("t", "c").with_certificate("nope!");
        assert!(
            App::from_registration(bad)
                .unwrap_err()
                .starts_with("certificates[0]: ")
        );
    }

    #[test]
    fn federated_credentials_follow_the_documented_forms() {
        let mi = FederatedCredential::managed_identity(Cloud::Usgov, "tid", "oid-1");
        assert_eq!(mi.issuer, "https://login.microsoftonline.us/tid/v2.0");
        assert_eq!(mi.subject, "oid-1");
        assert_eq!(mi.audiences, ["api://AzureADTokenExchangeUSGov"]);
        let k8s = FederatedCredential::kubernetes("https://oidc.example/x/", "ns", "sa");
        assert_eq!(k8s.subject, "system:serviceaccount:ns:sa");
        assert_eq!(k8s.audiences, ["api://AzureADTokenExchange"]);
        let parsed: FederatedCredential =
            serde_json::from_str(r#"{"issuer":"i","subject":"s"}"#).unwrap();
        assert_eq!(parsed, FederatedCredential::new("i", "s"));
    }
}
