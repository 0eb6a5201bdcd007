//! [`TokenSource`] adapters over `azure_identity` credentials (the only file that imports it),
//! and the `auto` chain. A fresh credential is built for every acquisition, so the credential's
//! own cache never hides a refresh or a forced re-acquisition: [`super::TokenCache`] caches.

use super::transport::RewritingTransport;
use super::{AccessToken, IdentityError, TokenSource};
use crate::cloud::Cloud;
use crate::config::{Config, IdentityConfig, Scope};
use async_trait::async_trait;
use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use secrecy::{ExposeSecret as _, SecretString};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// Environment the credentials read, captured once at start-up.
#[derive(Debug, Clone, Default)]
pub struct IdentityEnv {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub federated_token_file: Option<PathBuf>,
    pub identity_endpoint: Option<String>,
}

impl IdentityEnv {
    pub fn from_process() -> IdentityEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        IdentityEnv {
            client_id: var("AZURE_CLIENT_ID"),
            tenant_id: var("AZURE_TENANT_ID"),
            client_secret: var("AZURE_CLIENT_SECRET").map(SecretString::from),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            identity_endpoint: var("IDENTITY_ENDPOINT"),
        }
    }
}

/// One concrete way to get a token.
#[derive(Debug, Clone)]
enum Method {
    ManagedIdentity {
        client_id: Option<String>,
        app_service: bool,
    },
    Workload {
        client_id: String,
        tenant_id: String,
        token_file: PathBuf,
    },
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretString,
    },
    AzureCli {
        tenant_id: Option<String>,
    },
}

impl Method {
    fn describe(&self) -> String {
        match self {
            Method::ManagedIdentity {
                client_id,
                app_service,
            } => format!(
                "managed identity ({}, {})",
                if *app_service {
                    "IDENTITY_ENDPOINT"
                } else {
                    "IMDS"
                },
                client_id
                    .as_deref()
                    .map_or("system-assigned".to_string(), |c| format!("client id {c}"))
            ),
            Method::Workload {
                client_id,
                tenant_id,
                ..
            } => format!("workload identity (client id {client_id}, tenant {tenant_id})"),
            Method::ClientSecret {
                client_id,
                tenant_id,
                ..
            } => format!("client secret (client id {client_id}, tenant {tenant_id})"),
            Method::AzureCli { .. } => "Azure CLI".to_string(),
        }
    }
}

/// Gets tokens with `azure_identity`, through the rewriting transport.
#[derive(Debug)]
pub struct AzureTokenSource {
    methods: Vec<Method>,
    /// Index of the method that answered last (the `auto` chain sticks to it).
    chosen: AtomicUsize,
    transport: RewritingTransport,
    cloud: Cloud,
    auto: bool,
}

const NOT_CHOSEN: usize = usize::MAX;

/// Builds the configured token source. Environment variables fill what the config leaves out.
pub fn build_token_source(
    config: &Config,
    env: &IdentityEnv,
) -> Result<Arc<dyn TokenSource>, String> {
    let transport =
        RewritingTransport::new(config.emulator.clone(), config.upstream.identity_timeout)
            .map_err(|e| format!("identity: cannot build the HTTP client: {e}"))?;
    let (mut methods, auto) = match &config.identity {
        IdentityConfig::Auto { client_id } => (auto_chain(client_id.clone(), env), true),
        IdentityConfig::ManagedIdentity { client_id } => (
            vec![Method::ManagedIdentity {
                client_id: client_id.clone(),
                app_service: env.identity_endpoint.is_some(),
            }],
            false,
        ),
        IdentityConfig::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file,
        } => {
            let client_id = client_id.clone().or_else(|| env.client_id.clone()).ok_or(
                "identity: workload-identity needs client_id (or AZURE_CLIENT_ID, set by the AKS workload identity webhook)",
            )?;
            let tenant_id = tenant_id.clone().or_else(|| env.tenant_id.clone()).ok_or(
                "identity: workload-identity needs tenant_id (or AZURE_TENANT_ID, set by the AKS workload identity webhook)",
            )?;
            let token_file = token_file
                .clone()
                .or_else(|| env.federated_token_file.clone())
                .ok_or("identity: workload-identity needs federated_token_file (or AZURE_FEDERATED_TOKEN_FILE); is the pod labelled azure.workload.identity/use: \"true\"?")?;
            (
                vec![Method::Workload {
                    client_id,
                    tenant_id,
                    token_file,
                }],
                false,
            )
        }
        IdentityConfig::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => (
            vec![Method::ClientSecret {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret: secret.clone(),
            }],
            false,
        ),
        IdentityConfig::AzureCli { tenant_id } => (
            vec![Method::AzureCli {
                tenant_id: tenant_id.clone(),
            }],
            false,
        ),
    };
    if config.emulator.is_some() && auto {
        // The Azure CLI talks to Entra itself and cannot be pointed at the emulator.
        methods.retain(|m| !matches!(m, Method::AzureCli { .. }));
    }
    if config.emulator.is_some() && methods.iter().any(|m| matches!(m, Method::AzureCli { .. })) {
        return Err(
            "identity: azure-cli cannot be used with [azure] emulator (the CLI talks to Entra itself)"
                .into(),
        );
    }
    Ok(Arc::new(AzureTokenSource {
        chosen: AtomicUsize::new(if methods.len() == 1 { 0 } else { NOT_CHOSEN }),
        methods,
        transport,
        cloud: config.cloud,
        auto,
    }))
}

/// A token source for one caller's service principal (client-credentials callers).
pub fn client_secret_source(
    config: &Config,
    tenant_id: &str,
    client_id: &str,
    secret: SecretString,
) -> Result<Arc<dyn TokenSource>, String> {
    let transport =
        RewritingTransport::new(config.emulator.clone(), config.upstream.identity_timeout)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(Arc::new(AzureTokenSource {
        methods: vec![Method::ClientSecret {
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            secret,
        }],
        chosen: AtomicUsize::new(0),
        transport,
        cloud: config.cloud,
        auto: false,
    }))
}

/// The `auto` order: the pod's own identity before the node's. Workload identity (its env is
/// injected into the pod), then a service principal from env, then managed identity (which on
/// AKS would answer with the node's identity through IMDS), then the Azure CLI.
fn auto_chain(client_id: Option<String>, env: &IdentityEnv) -> Vec<Method> {
    let mut chain = Vec::new();
    let client = client_id.clone().or_else(|| env.client_id.clone());
    if let (Some(c), Some(t), Some(f)) = (&client, &env.tenant_id, &env.federated_token_file) {
        chain.push(Method::Workload {
            client_id: c.clone(),
            tenant_id: t.clone(),
            token_file: f.clone(),
        });
    }
    if let (Some(c), Some(t), Some(s)) = (&client, &env.tenant_id, &env.client_secret) {
        chain.push(Method::ClientSecret {
            tenant_id: t.clone(),
            client_id: c.clone(),
            secret: s.clone(),
        });
    }
    chain.push(Method::ManagedIdentity {
        client_id: client_id.or_else(|| env.client_id.clone()),
        app_service: env.identity_endpoint.is_some(),
    });
    chain.push(Method::AzureCli { tenant_id: None });
    chain
}

impl AzureTokenSource {
    fn client_options(&self) -> ClientOptions {
        let cloud = match self.cloud {
            Cloud::Public => CloudConfiguration::AzurePublic,
            Cloud::Usgov => CloudConfiguration::AzureGovernment,
            Cloud::China => CloudConfiguration::AzureChina,
        };
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.transport.clone()))),
            retry: RetryOptions::none(),
            cloud: Some(Arc::new(cloud)),
            ..ClientOptions::default()
        }
    }

    fn credential(&self, method: &Method) -> azure_core::Result<Arc<dyn TokenCredential>> {
        let client_options = self.client_options();
        Ok(match method {
            Method::ManagedIdentity { client_id, .. } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options,
                }))?
            }
            Method::Workload {
                client_id,
                tenant_id,
                token_file,
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            }))?,
            Method::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret.expose_secret().to_string()),
                Some(ClientSecretCredentialOptions { client_options }),
            )?,
            Method::AzureCli { tenant_id } => {
                AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    ..AzureCliCredentialOptions::default()
                }))?
            }
        })
    }

    async fn acquire_with(
        &self,
        method: &Method,
        scope: &Scope,
    ) -> Result<AccessToken, IdentityError> {
        let credential = self
            .credential(method)
            .map_err(|e| IdentityError::Unavailable {
                credential: method.describe(),
                reason: one_line(&e.to_string()),
            })?;
        let acquired_at = SystemTime::now();
        let token = credential
            .get_token(&[scope.as_str()], None)
            .await
            .map_err(|e| {
                let reason = one_line(&e.to_string());
                IdentityError::Failed {
                    credential: method.describe(),
                    aadsts: super::parse_aadsts(&reason),
                    reason,
                }
            })?;
        let expires_in = (token.expires_on - azure_core::time::OffsetDateTime::now_utc())
            .whole_seconds()
            .max(0) as u64;
        Ok(AccessToken {
            secret: SecretString::from(token.token.secret().to_string()),
            expires_at: SystemTime::now() + Duration::from_secs(expires_in),
            acquired_at,
        })
    }
}

/// Error texts from `azure_identity` span lines; logs and JSON errors want one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[async_trait]
impl TokenSource for AzureTokenSource {
    async fn acquire(&self, scope: &Scope) -> Result<AccessToken, IdentityError> {
        let chosen = self.chosen.load(Ordering::Relaxed);
        if let Some(method) = self.methods.get(chosen) {
            return self.acquire_with(method, scope).await;
        }
        // The auto chain: first credential that answers wins, and is kept.
        let mut failures = Vec::new();
        for (i, method) in self.methods.iter().enumerate() {
            match self.acquire_with(method, scope).await {
                Ok(token) => {
                    self.chosen.store(i, Ordering::Relaxed);
                    tracing::info!(credential = %method.describe(), "auto identity: using {}", method.describe());
                    return Ok(token);
                }
                Err(e) => {
                    tracing::info!(credential = %method.describe(), error = %e, "auto identity: skipping");
                    failures.push(e.to_string());
                }
            }
        }
        Err(IdentityError::Unavailable {
            credential: "auto".into(),
            reason: format!("no credential answered: {}", failures.join("; ")),
        })
    }

    fn describe(&self) -> String {
        match self.methods.get(self.chosen.load(Ordering::Relaxed)) {
            Some(m) if self.auto => format!("auto: {}", m.describe()),
            Some(m) => m.describe(),
            None => format!(
                "auto ({})",
                self.methods
                    .iter()
                    .map(Method::describe)
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_puts_the_pod_identity_before_the_node() {
        let env = IdentityEnv {
            client_id: Some("c".into()),
            tenant_id: Some("t".into()),
            federated_token_file: Some("/var/run/secrets/azure/tokens/azure-identity-token".into()),
            ..IdentityEnv::default()
        };
        let chain = auto_chain(None, &env);
        assert!(matches!(chain[0], Method::Workload { .. }));
        assert!(matches!(chain[1], Method::ManagedIdentity { .. }));
        let chain = auto_chain(None, &IdentityEnv::default());
        assert!(matches!(
            chain[0],
            Method::ManagedIdentity {
                client_id: None,
                app_service: false
            }
        ));
    }

    #[test]
    fn descriptions_carry_no_secret() {
        let m = Method::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: SecretString::from("hunter2".to_string()),
        };
        assert!(!m.describe().contains("hunter2"));
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
