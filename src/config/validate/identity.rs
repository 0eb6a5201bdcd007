//! `[identity]`: how the proxy itself obtains tokens, and which fields each kind uses.

use super::non_empty;
use crate::config::IdentityConfig;
use crate::config::errors::Errors;
use crate::config::raw::{RawIdentity, RawIdentityKind};
use secrecy::ExposeSecret as _;

pub(super) fn validate_identity(
    raw: Option<RawIdentity>,
    errors: &mut Errors,
) -> Option<IdentityConfig> {
    let Some(raw) = raw else {
        return Some(IdentityConfig::Auto { client_id: None });
    };
    use RawIdentityKind as K;
    let kind = raw.kind;
    let has_client_id = raw.client_id.is_some();
    let has_tenant_id = raw.tenant_id.is_some();
    let client_id = errors.check("identity.client_id", non_empty(raw.client_id));
    let tenant_id = errors.check("identity.tenant_id", non_empty(raw.tenant_id));
    let unused = [
        (
            "client_secret",
            kind != K::ClientSecret && raw.client_secret.is_some(),
        ),
        (
            "federated_token_file",
            kind != K::WorkloadIdentity && raw.federated_token_file.is_some(),
        ),
        (
            "tenant_id",
            matches!(kind, K::Auto | K::ManagedIdentity) && has_tenant_id,
        ),
        ("client_id", kind == K::AzureCli && has_client_id),
    ];
    for (field, _) in unused.iter().filter(|(_, unused)| *unused) {
        errors.add(
            format!("identity.{field}"),
            format!("not used by kind = \"{}\"; remove it", kind.name()),
        );
    }
    let (client_id, tenant_id) = (client_id?, tenant_id?);
    match kind {
        K::Auto => Some(IdentityConfig::Auto { client_id }),
        K::ManagedIdentity => Some(IdentityConfig::ManagedIdentity { client_id }),
        K::WorkloadIdentity => Some(IdentityConfig::WorkloadIdentity {
            client_id,
            tenant_id,
            token_file: raw.federated_token_file,
        }),
        K::ClientSecret => {
            for (field, missing) in [
                ("client_secret", raw.client_secret.is_none()),
                ("tenant_id", tenant_id.is_none()),
                ("client_id", client_id.is_none()),
            ] {
                if missing {
                    errors.add(
                        format!("identity.{field}"),
                        "required for kind = \"client-secret\"",
                    );
                }
            }
            let secret = raw.client_secret?;
            if secret.expose_secret().trim().is_empty() {
                return errors.reject("identity.client_secret", "is empty");
            }
            Some(IdentityConfig::ClientSecret {
                tenant_id: tenant_id?,
                client_id: client_id?,
                secret,
            })
        }
        K::AzureCli => Some(IdentityConfig::AzureCli { tenant_id }),
    }
}
