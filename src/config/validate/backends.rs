//! `[[backends]]`: each upstream resource's endpoint (normalized), api-version, cloud, token
//! scope, deployments and concurrency limit.

use super::seconds;
use crate::cloud::{Cloud, HostKind};
use crate::config::emulator::is_loopback;
use crate::config::endpoint::{NormalizedEndpoint, normalize_endpoint};
use crate::config::errors::Errors;
use crate::config::raw::RawBackend;
use crate::config::{Backend, DEFAULT_API_VERSION, DEFAULT_QUEUE_TIMEOUT, Note, NoteLevel, Scope};
use std::collections::HashSet;

/// Every `[[backends]]` entry by position, valid or not, so that later sections resolve a
/// backend's name without repeating the backend's own problems.
pub(super) struct Backends(Vec<Slot>);

struct Slot {
    name: String,
    /// Deployments known on this backend; as written when the backend itself is invalid.
    deployments: Vec<String>,
    backend: Option<Backend>,
}

impl Backends {
    /// The position of the backend named `name`, which is its index in
    /// [`Config::backends`](crate::config::Config::backends) once every backend is valid.
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|s| s.name == name)
    }

    pub(super) fn names(&self) -> Vec<&str> {
        self.0.iter().map(|s| s.name.as_str()).collect()
    }

    /// Notes `deployment` as known on the backend at `index`.
    pub(super) fn add_deployment(&mut self, index: usize, deployment: &str) {
        if let Some(slot) = self.0.get_mut(index)
            && !slot.deployments.iter().any(|d| d == deployment)
        {
            slot.deployments.push(deployment.to_string());
        }
    }

    pub(super) fn has_deployment(&self, deployment: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.deployments.iter().any(|d| d == deployment))
    }

    /// Every backend, when all are valid.
    pub(super) fn into_valid(self) -> Option<Vec<Backend>> {
        self.0
            .into_iter()
            .map(|slot| {
                let mut backend = slot.backend?;
                backend.deployments = slot.deployments;
                Some(backend)
            })
            .collect()
    }
}

/// `emulated`: `[azure] emulator` is set, so a loopback backend is the local stand-in for Azure.
pub(super) fn validate_backends(
    raw: Vec<RawBackend>,
    cloud: Cloud,
    emulated: bool,
    notes: &mut Vec<Note>,
    errors: &mut Errors,
) -> Backends {
    if raw.is_empty() {
        errors.add("backends", "at least one [[backends]] entry is required");
    }
    let mut names = HashSet::new();
    let slots = raw
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let at = format!("backends[{i}]");
            let before = errors.len();
            if b.name.trim().is_empty() {
                errors.add(format!("{at}.name"), "is empty");
            } else if !names.insert(b.name.clone()) {
                errors.add(
                    format!("{at}.name"),
                    format!("duplicate backend name {:?}", b.name),
                );
            }
            let name = b.name.clone();
            let written = b.deployments.clone();
            let backend = validate_backend(b, &at, cloud, emulated, notes, errors);
            let backend = backend.filter(|_| errors.len() == before);
            Slot {
                name,
                deployments: backend.as_ref().map_or(written, |b| b.deployments.clone()),
                backend,
            }
        })
        .collect();
    Backends(slots)
}

fn validate_backend(
    b: RawBackend,
    at: &str,
    cloud: Cloud,
    emulated: bool,
    notes: &mut Vec<Note>,
    errors: &mut Errors,
) -> Option<Backend> {
    let norm = errors.check(format!("{at}.endpoint"), normalize_endpoint(&b.endpoint))?;
    let before = errors.len();
    errors.check(
        format!("{at}.endpoint"),
        clear_text(&norm.base, at, emulated, notes),
    );
    let api_version = api_version(&b, &norm, at, notes);
    let api_version = errors.check(format!("{at}.api_version"), {
        validate_api_version(&api_version).map(|()| api_version)
    });
    let host = norm.base.host_str().unwrap_or_default().to_string();
    let host_kind = errors.check(format!("{at}.endpoint"), host_kind(&host, cloud));
    if host_kind == Some(Some(HostKind::Regional)) {
        notes.push(Note {
            level: NoteLevel::Warning,
            message: format!(
                "{at}.endpoint: {host} is a shared regional endpoint, which accepts only keys; Entra tokens work only on a resource's custom subdomain (https://<resource>.openai.azure.com or https://<resource>.cognitiveservices.azure.com)"
            ),
        });
    }
    let written = super::services::Written {
        service: b.service,
        resource_id: b.resource_id.as_deref(),
        region: b.region.as_deref(),
    };
    let service = super::services::backend_service(
        written,
        &host,
        host_kind.flatten(),
        cloud,
        at,
        notes,
        errors,
    );
    let audience = service.as_ref().and_then(|s| s.service.audience(cloud));
    let scope = match (&b.scope, audience, host_kind) {
        (Some(s), _, _) => errors.check(format!("{at}.scope"), Scope::parse(s)),
        (None, Some(audience), _) => Some(Scope::for_audience(audience)),
        (None, None, Some(kind)) => Some(default_scope(&norm, kind, cloud, at, notes)),
        (None, None, None) => None,
    };
    let deployments = deployments(&b, norm.deployment_from_url.as_deref(), at, errors);
    if b.max_concurrent == Some(0) {
        errors.add(format!("{at}.max_concurrent"), "must be at least 1");
    }
    let queue_timeout = errors.check(
        format!("{at}.queue_timeout_secs"),
        seconds(b.queue_timeout_secs, DEFAULT_QUEUE_TIMEOUT),
    );
    if errors.len() != before {
        return None;
    }
    let service = service?;
    Some(Backend {
        name: b.name,
        endpoint: norm.base,
        api_version: api_version?,
        scope: scope?,
        host_kind: host_kind?,
        api: b.api,
        deployments,
        max_concurrent: b.max_concurrent,
        queue_timeout: queue_timeout?,
        service: service.service,
        resource_id: service.resource_id,
        region: service.region,
        presenter: service.presenter,
    })
}

/// A plain `http://` endpoint: refused on an Azure host (the proxy would send its bearer token
/// in clear text across the network), allowed elsewhere — a loopback or private name, a
/// TLS-terminating sidecar — with a warning, except on loopback with `[azure] emulator` set
/// (the local stand-in for Azure).
fn clear_text(
    endpoint: &url::Url,
    at: &str,
    emulated: bool,
    notes: &mut Vec<Note>,
) -> Result<(), String> {
    if endpoint.scheme() != "http" {
        return Ok(());
    }
    let host = endpoint.host_str().unwrap_or_default();
    if Cloud::of_host(host).is_some() || crate::services::service_host(host).is_some() {
        let mut https = endpoint.clone();
        let _ = https.set_scheme("https");
        let _ = https.set_port(None);
        return Err(format!(
            "{} is plain HTTP to an Azure host: the proxy would send its bearer token in clear text; use {}",
            endpoint.as_str().trim_end_matches('/'),
            https.as_str().trim_end_matches('/')
        ));
    }
    if emulated && is_loopback(endpoint) {
        return Ok(());
    }
    notes.push(Note {
        level: NoteLevel::Warning,
        message: format!(
            "{at}.endpoint: {} is plain HTTP, so the proxy's bearer token for it travels unencrypted; fine on loopback or to a TLS-terminating sidecar, otherwise use https://",
            endpoint.as_str().trim_end_matches('/')
        ),
    });
    Ok(())
}

/// The api-version to use: as set, else from a pasted URL, else the default. Notes what was
/// changed when the endpoint was a pasted URL.
fn api_version(
    b: &RawBackend,
    norm: &NormalizedEndpoint,
    at: &str,
    notes: &mut Vec<Note>,
) -> String {
    let mut api_version = b.api_version.clone();
    if norm.changed {
        let mut what = vec![format!(
            "{at}.endpoint: using the resource base {} instead of the pasted URL (clients add /openai/... themselves; a full deployment URL as endpoint is the classic 404 trap)",
            norm.base.as_str().trim_end_matches('/')
        )];
        if let Some(v) = &norm.api_version_from_url {
            match &b.api_version {
                None => {
                    what.push(format!("api_version {v} taken from the URL"));
                    api_version = Some(v.clone());
                }
                Some(explicit) if explicit != v => what.push(format!(
                    "the URL's api-version {v} is ignored because api_version = {explicit:?} is set"
                )),
                Some(_) => {}
            }
        }
        if let Some(d) = &norm.deployment_from_url {
            what.push(format!("deployment {d:?} noted as known on this backend"));
        }
        notes.push(Note {
            level: NoteLevel::Normalized,
            message: what.join("; "),
        });
    }
    api_version.unwrap_or_else(|| DEFAULT_API_VERSION.to_string())
}

/// The kind of Azure AI host, `None` for other hosts; a host of another cloud is an error.
fn host_kind(host: &str, cloud: Cloud) -> Result<Option<HostKind>, String> {
    match Cloud::of_host(host) {
        Some((host_cloud, _)) if host_cloud != cloud => Err(format!(
            "host {host} belongs to the {host_cloud} cloud, but azure.cloud is \"{cloud}\"; set [azure] cloud = \"{host_cloud}\" or use a {cloud} endpoint"
        )),
        Some((_, kind)) => Ok(Some(kind)),
        None => Ok(None),
    }
}

/// The scope a backend needs when it sets none: from its host, else Cognitive Services (with
/// a warning unless the host is loopback, where the emulator runs).
fn default_scope(
    norm: &NormalizedEndpoint,
    host_kind: Option<HostKind>,
    cloud: Cloud,
    at: &str,
    notes: &mut Vec<Note>,
) -> Scope {
    if let Some(kind) = host_kind {
        return Scope::for_audience(cloud.audience_for(kind));
    }
    let scope = Scope::for_audience(cloud.cognitive_audience());
    if !is_loopback(&norm.base) {
        notes.push(Note {
            level: NoteLevel::Warning,
            message: format!(
                "{at}.endpoint: {} is not an Azure AI host name; using scope {scope} (set scope = \"...\" on this backend if it needs another audience)",
                norm.base.host_str().unwrap_or_default()
            ),
        });
    }
    scope
}

/// `deployments = [...]` as written, plus the deployment a pasted URL named.
fn deployments(
    b: &RawBackend,
    from_url: Option<&str>,
    at: &str,
    errors: &mut Errors,
) -> Vec<String> {
    let mut deployments = Vec::new();
    for (i, d) in b.deployments.iter().enumerate() {
        if errors
            .check(format!("{at}.deployments[{i}]"), validate_deployment(d))
            .is_some()
        {
            deployments.push(d.clone());
        }
    }
    if let Some(d) = from_url
        && validate_deployment(d).is_ok()
        && !deployments.iter().any(|x| x == d)
    {
        deployments.push(d.to_string());
    }
    deployments
}

/// An Azure deployment name: not empty, no LiteLLM `azure/` prefix, no `/`, `?` or `#`.
pub(super) fn validate_deployment(d: &str) -> Result<(), String> {
    if d.trim().is_empty() {
        return Err("is empty".into());
    }
    if let Some(rest) = d.strip_prefix("azure/") {
        return Err(format!(
            "{d:?} starts with \"azure/\", which is LiteLLM's provider prefix, not part of an Azure deployment name; use {rest:?}"
        ));
    }
    if d.contains('/') || d.contains('?') || d.contains('#') {
        return Err(format!(
            "{d:?} is not a deployment name (Azure deployment names cannot contain '/', '?' or '#')"
        ));
    }
    Ok(())
}

/// An Azure api-version: `YYYY-MM-DD`, optionally `-preview`.
fn validate_api_version(v: &str) -> Result<(), String> {
    let bytes = v.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let suffix_ok = matches!(v.get(10..).unwrap_or_default(), "" | "-preview");
    if date_ok && suffix_ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not an Azure api-version such as 2024-10-21 or 2025-01-01-preview"
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::NoteLevel;
    use crate::config::testing::{err, parse};

    #[test]
    fn host_of_another_cloud_is_a_config_error() {
        let e = err("[[backends]]\nname='a'\nendpoint='https://res.openai.azure.us'");
        assert!(e.contains("belongs to the usgov cloud"), "{e}");
        let c = parse("[azure]\ncloud='usgov'\n[[backends]]\nname='a'\nendpoint='https://res.openai.azure.us'").unwrap();
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://cognitiveservices.azure.us/.default"
        );
    }

    #[test]
    fn scope_follows_host_and_can_be_overridden() {
        let c = parse("[[backends]]\nname='f'\nendpoint='https://p.services.ai.azure.com'\n[[backends]]\nname='o'\nendpoint='http://127.0.0.1:9'\nscope='https://ai.azure.com'").unwrap();
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://ai.azure.com/.default"
        );
        assert_eq!(
            c.backends[1].scope.as_str(),
            "https://ai.azure.com/.default"
        );
        assert_eq!(c.scopes().len(), 1);
    }

    #[test]
    fn plain_http_to_an_azure_host_is_an_error_naming_https() {
        for (host, https) in [
            (
                "http://res.openai.azure.com",
                "use https://res.openai.azure.com",
            ),
            (
                "http://res.cognitiveservices.azure.com:80/",
                "use https://res.cognitiveservices.azure.com",
            ),
            (
                "http://proj.services.ai.azure.com",
                "use https://proj.services.ai.azure.com",
            ),
            (
                "http://res.openai.azure.us",
                "use https://res.openai.azure.us",
            ),
            (
                "http://eastus.api.cognitive.microsoft.com",
                "use https://eastus.api.cognitive.microsoft.com",
            ),
        ] {
            let e = err(&format!("[[backends]]\nname='a'\nendpoint='{host}'"));
            assert!(
                e.contains("backends[0].endpoint: ")
                    && e.contains("clear text")
                    && e.contains(https),
                "{host}: {e}"
            );
        }
    }

    #[test]
    fn plain_http_elsewhere_is_a_warning_unless_it_is_the_emulator() {
        let warned = |text: &str| {
            parse(text)
                .unwrap()
                .notes
                .iter()
                .any(|n| n.level == NoteLevel::Warning && n.message.contains("plain HTTP"))
        };
        assert!(warned(
            "[[backends]]\nname='a'\nendpoint='http://aoai.internal:8080'\nscope='https://cognitiveservices.azure.com'"
        ));
        assert!(warned(
            "[[backends]]\nname='a'\nendpoint='http://127.0.0.1:9'"
        ));
        assert!(!warned(
            "[azure]\nemulator='http://127.0.0.1:1'\n[[backends]]\nname='a'\nendpoint='http://127.0.0.1:9'"
        ));
        assert!(!warned(
            "[[backends]]\nname='a'\nendpoint='https://res.openai.azure.com'"
        ));
    }

    #[test]
    fn regional_endpoint_is_a_warning() {
        let c =
            parse("[[backends]]\nname='r'\nendpoint='https://eastus.api.cognitive.microsoft.com'")
                .unwrap();
        assert!(
            c.notes
                .iter()
                .any(|n| n.level == NoteLevel::Warning && n.message.contains("custom subdomain"))
        );
    }

    #[test]
    fn api_version_with_non_ascii_text_is_refused_not_a_panic() {
        let e =
            err("[[backends]]\nname='a'\nendpoint='http://127.0.0.1:1'\napi_version='2024-10-2é'");
        assert!(
            e.contains("backends[0].api_version: \"2024-10-2é\" is not an Azure api-version"),
            "{e}"
        );
    }
}
