//! `config check`'s view of a configuration: as it will be used, with secrets masked.

use super::{Config, IdentityConfig};
use std::collections::BTreeMap;

/// Renders the config as it will be used, with secrets masked (for `config check`).
pub fn render_normalized(config: &Config) -> String {
    let mut out = BTreeMap::new();
    out.insert("server.listen", config.server.listen.to_string());
    out.insert("azure.cloud", config.cloud.to_string());
    if let Some(e) = &config.emulator {
        out.insert("azure.emulator", e.to_string());
    }
    out.insert("identity.kind", config.identity.kind_name().to_string());
    let mut s: String = out
        .into_iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    if let IdentityConfig::ClientSecret {
        tenant_id,
        client_id,
        ..
    } = &config.identity
    {
        s.push_str(&format!(
            "identity.tenant_id = {tenant_id}\nidentity.client_id = {client_id}\nidentity.client_secret = ****\n"
        ));
    }
    for b in &config.backends {
        s.push_str(&format!(
            "backend {}: endpoint {} api_version {} scope {} api {:?} deployments [{}]",
            b.name,
            b.endpoint.as_str().trim_end_matches('/'),
            b.api_version,
            b.scope,
            b.api,
            b.deployments.join(", ")
        ));
        if b.service != crate::services::Service::OpenAi {
            s.push_str(&format!(" service {}", b.service));
        }
        if let Some(id) = &b.resource_id {
            s.push_str(&format!(" resource_id {id}"));
        }
        if let Some(region) = &b.region {
            s.push_str(&format!(" region {region}"));
        }
        s.push('\n');
    }
    if let Some(url) = &config.server.public_url {
        s.push_str(&format!(
            "server.public_url = {}\n",
            url.as_str().trim_end_matches('/')
        ));
    }
    if config.server.issued_token_secret.is_some() {
        s.push_str("server.issued_token_secret = ****\n");
    }
    for m in &config.models {
        let targets: Vec<String> = m
            .targets
            .iter()
            .map(|t| {
                let backend = config
                    .backends
                    .get(t.backend)
                    .map_or("?", |b| b.name.as_str());
                format!(
                    "{backend}/{} (priority {}, weight {})",
                    t.deployment, t.priority, t.weight
                )
            })
            .collect();
        s.push_str(&format!("model {} -> {}\n", m.name, targets.join(", ")));
    }
    for k in &config.keys {
        s.push_str(&format!(
            "key {}{} sha256 {}…\n",
            k.name,
            if k.legacy {
                " (legacy resource key)"
            } else {
                ""
            },
            &k.digest.to_hex()[..8]
        ));
    }
    s
}
