//! What a backend's `service`, `resource_id` and `region` say, checked against its host; and
//! the `[server]` keys of the services: `public_url` and `issued_token_secret`.

use crate::cloud::{Cloud, HostKind};
use crate::config::errors::Errors;
use crate::config::{Note, NoteLevel};
use crate::services::{Presenter, ResourceId, Service, ServiceHost, service_host};
use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

/// Shortest `issued_token_secret`: 256 bits of base64 or hex are longer.
const MIN_SECRET_LEN: usize = 32;

/// A backend's service as written, before it is checked.
pub(super) struct Written<'a> {
    pub(super) service: Option<Service>,
    pub(super) resource_id: Option<&'a str>,
    pub(super) region: Option<&'a str>,
}

/// A backend's service, checked.
pub(super) struct Checked {
    pub(super) service: Service,
    pub(super) resource_id: Option<ResourceId>,
    pub(super) region: Option<String>,
    pub(super) presenter: Presenter,
}

/// The backend's service — as written, else the one its host belongs to, else `openai` — with
/// its resource id and region, each checked against what the service and its host need.
pub(super) fn backend_service(
    written: Written<'_>,
    host: &str,
    host_kind: Option<HostKind>,
    cloud: Cloud,
    at: &str,
    notes: &mut Vec<Note>,
    errors: &mut Errors,
) -> Option<Checked> {
    let before = errors.len();
    let on_host = service_host(host);
    if let Some((host_cloud, _)) = on_host
        && host_cloud != cloud
    {
        errors.add(
            format!("{at}.endpoint"),
            format!(
                "host {host} belongs to the {host_cloud} cloud, but azure.cloud is \"{cloud}\"; set [azure] cloud = \"{host_cloud}\" or use a {cloud} endpoint"
            ),
        );
    }
    let inferred = on_host.map(|(_, kind)| Service::of_host_kind(kind));
    let service = written.service.or(inferred).unwrap_or_default();
    if let (Some(written), Some(inferred)) = (written.service, inferred)
        && written != inferred
    {
        errors.add(
            format!("{at}.service"),
            format!(
                "{host} is a {inferred} host, but service = \"{written}\"; set service = \"{inferred}\" (or leave it out)"
            ),
        );
    }
    let resource_id = resource_id(service, written.resource_id, at, errors);
    let region = region(service, written.region, at, errors);
    let regional_speech = service == Service::Speech
        && (on_host.is_some_and(|(_, k)| k == ServiceHost::SpeechRegional)
            || host_kind == Some(HostKind::Regional));
    if regional_speech {
        speech_on_regional_host(host, resource_id.is_some(), at, notes, errors);
    }
    let global_translator = service == Service::Translator
        && on_host.is_some_and(|(_, k)| k == ServiceHost::TranslatorGlobal);
    if global_translator && region.is_none() && errors.len() == before {
        errors.add(
            format!("{at}.region"),
            format!(
                "Translator's global endpoint {host} takes an Entra token only with the resource's region and id beside it (Ocp-Apim-Subscription-Region, Ocp-Apim-ResourceId); set region = \"<the resource's location, e.g. westeurope, or global>\" and resource_id, or use the resource's custom domain https://<name>.cognitiveservices.azure.com"
            ),
        );
    }
    if service == Service::Translator && region.is_some() && resource_id.is_none() {
        errors.add(
            format!("{at}.resource_id"),
            "a translator backend with region sends Ocp-Apim-ResourceId beside the token; set resource_id = \"/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name>\"",
        );
    }
    if errors.len() != before {
        return None;
    }
    let presenter = errors.check(
        format!("{at}.resource_id"),
        Presenter::new(service, resource_id.as_ref(), region.as_deref()),
    )?;
    Some(Checked {
        service,
        resource_id,
        region,
        presenter,
    })
}

/// `resource_id`: an ARM id, on the services that send one.
fn resource_id(
    service: Service,
    raw: Option<&str>,
    at: &str,
    errors: &mut Errors,
) -> Option<ResourceId> {
    let raw = raw?;
    if !matches!(service, Service::Speech | Service::Translator) {
        errors.add(
            format!("{at}.resource_id"),
            format!(
                "only speech and translator backends send a resource id; this backend is service = \"{service}\""
            ),
        );
        return None;
    }
    errors.check(format!("{at}.resource_id"), ResourceId::parse(raw))
}

/// `region`: an Azure region name (or `global`), on translator backends.
fn region(service: Service, raw: Option<&str>, at: &str, errors: &mut Errors) -> Option<String> {
    let raw = raw?.trim();
    if service != Service::Translator {
        errors.add(
            format!("{at}.region"),
            format!(
                "only translator backends send a region; this backend is service = \"{service}\""
            ),
        );
        return None;
    }
    let ok = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        errors.add(
            format!("{at}.region"),
            format!(
                "{raw:?} is not an Azure region name such as westeurope, eastus2 or global (the resource's location, az cognitiveservices account show --query location)"
            ),
        );
        return None;
    }
    Some(raw.to_ascii_lowercase())
}

/// Speech on a regional host: an Entra token works there only as `aad#{resource id}#{token}`
/// (an error without `resource_id`); batch transcription needs the custom domain (a warning).
fn speech_on_regional_host(
    host: &str,
    has_resource_id: bool,
    at: &str,
    notes: &mut Vec<Note>,
    errors: &mut Errors,
) {
    if !has_resource_id {
        errors.add(
            format!("{at}.resource_id"),
            format!(
                "Speech on the regional host {host} takes an Entra token only as aad#<resource id>#<token>; set resource_id = \"/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.CognitiveServices/accounts/<name>\" (az cognitiveservices account show -g GROUP -n NAME --query id -o tsv), and give the resource a custom domain, which Entra authentication needs"
            ),
        );
        return;
    }
    notes.push(Note {
        level: NoteLevel::Warning,
        message: format!(
            "{at}.endpoint: {host} is a regional Speech host; text to speech and speech to text work there with the aad# form, but batch transcription (/speechtotext) takes Entra tokens only on the resource's custom domain (https://<name>.cognitiveservices.azure.com)"
        ),
    });
}

/// `[server] public_url`: a base URL only (scheme, host, port).
pub(super) fn public_url(raw: Option<&str>) -> Result<Option<Url>, String> {
    let Some(raw) = raw.map(str::trim) else {
        return Ok(None);
    };
    let url = Url::parse(raw).map_err(|e| {
        format!("{raw:?} is not a URL ({e}); expected e.g. https://ai-proxy.contoso.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{raw:?} must be an http:// or https:// URL with a host, e.g. https://ai-proxy.contoso.com"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} has a path, query or fragment; give the base only (scheme, host and port), e.g. {}://{}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(Some(url))
}

/// `[server] issued_token_secret`: not empty.
pub(super) fn token_secret(raw: Option<SecretString>) -> Result<Option<SecretString>, String> {
    match raw {
        Some(s) if s.expose_secret().trim().is_empty() => Err(format!(
            "is empty; use a random secret of at least {MIN_SECRET_LEN} characters (openssl rand -base64 32), from the environment: \"${{ENTRA_PROXY_TOKEN_SECRET}}\""
        )),
        other => Ok(other),
    }
}

/// A warning for an `issued_token_secret` too short to keep issued tokens from being forged.
pub(super) fn weak_secret(secret: Option<&SecretString>, notes: &mut Vec<Note>) {
    if secret.is_some_and(|s| s.expose_secret().trim().len() < MIN_SECRET_LEN) {
        notes.push(Note {
            level: NoteLevel::Warning,
            message: format!(
                "server.issued_token_secret: is shorter than {MIN_SECRET_LEN} characters, so issued tokens could be forged by guessing it; use a random secret (openssl rand -base64 32)"
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::config::NoteLevel;
    use crate::config::testing::{err, parse};
    use crate::services::Service;

    const RID: &str = "/subscriptions/00000000-0000-4000-8000-0000000000e1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/res";

    fn backend(endpoint: &str, extra: &str) -> String {
        format!("[[backends]]\nname='s'\nendpoint='{endpoint}'\n{extra}\n")
    }

    #[test]
    fn the_service_follows_the_host_unless_written() {
        let c = parse(&backend("https://mysearch.search.windows.net", "")).unwrap();
        assert_eq!(c.backends[0].service, Service::Search);
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://search.azure.com/.default"
        );
        let c = parse(&backend(
            "https://res.cognitiveservices.azure.com",
            "service='speech'",
        ))
        .unwrap();
        assert_eq!(c.backends[0].service, Service::Speech);
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://cognitiveservices.azure.com/.default"
        );
        let c = parse(&backend("https://res.openai.azure.com", "")).unwrap();
        assert_eq!(c.backends[0].service, Service::OpenAi);
        let c = parse(&format!(
            "[azure]\ncloud='usgov'\n{}",
            backend("https://s.search.azure.us", "")
        ))
        .unwrap();
        assert_eq!(
            c.backends[0].scope.as_str(),
            "https://search.azure.us/.default"
        );
        let e = err(&backend(
            "https://mysearch.search.windows.net",
            "service='openai'",
        ));
        assert!(
            e.contains("backends[0].service: mysearch.search.windows.net is a search host, but service = \"openai\""),
            "{e}"
        );
        let e = err(&backend("https://s.search.azure.cn", ""));
        assert!(e.contains("belongs to the china cloud"), "{e}");
        let e = err(&backend("http://mysearch.search.windows.net", ""));
        assert!(e.contains("clear text"), "{e}");
        let e = err(&backend("http://127.0.0.1:1", "service='vision'"));
        assert!(e.contains("backends[0].service"), "{e}");
    }

    #[test]
    fn speech_on_a_regional_host_needs_a_resource_id() {
        for host in [
            "https://westeurope.tts.speech.microsoft.com",
            "https://westeurope.api.cognitive.microsoft.com",
        ] {
            let e = err(&backend(host, "service='speech'"));
            assert!(
                e.contains("backends[0].resource_id: Speech on the regional host")
                    && e.contains("aad#<resource id>#<token>")
                    && e.contains("set resource_id = "),
                "{e}"
            );
        }
        let c = parse(&backend(
            "https://westeurope.tts.speech.microsoft.com",
            &format!("resource_id='{RID}'"),
        ))
        .unwrap();
        assert_eq!(c.backends[0].resource_id.as_ref().unwrap().as_str(), RID);
        assert!(c.notes.iter().any(|n| n.level == NoteLevel::Warning
            && n.message.contains("batch transcription")));
        // A custom domain takes the plain bearer: no resource id needed.
        parse(&backend(
            "https://res.cognitiveservices.azure.com",
            "service='speech'",
        ))
        .unwrap();
    }

    #[test]
    fn translator_on_the_global_host_needs_region_and_resource_id() {
        let global = "https://api.cognitive.microsofttranslator.com";
        let e = err(&backend(global, ""));
        assert!(
            e.contains("backends[0].region: Translator's global endpoint"),
            "{e}"
        );
        let e = err(&backend(global, "region='westeurope'"));
        assert!(
            e.contains("backends[0].resource_id: a translator backend with region"),
            "{e}"
        );
        let c = parse(&backend(
            global,
            &format!("region='WestEurope'\nresource_id='{RID}'"),
        ))
        .unwrap();
        assert_eq!(c.backends[0].region.as_deref(), Some("westeurope"));
        assert!(c.backends[0].presenter.sends_translator_headers());
        let c = parse(&backend(
            "https://res.cognitiveservices.azure.com",
            "service='translator'",
        ))
        .unwrap();
        assert!(!c.backends[0].presenter.sends_translator_headers());
        let e = err(&backend(
            global,
            &format!("region='west europe'\nresource_id='{RID}'"),
        ));
        assert!(e.contains("is not an Azure region name"), "{e}");
    }

    #[test]
    fn resource_ids_and_regions_only_where_a_service_sends_them() {
        let e = err(&backend(
            "https://res.openai.azure.com",
            &format!("resource_id='{RID}'"),
        ));
        assert!(
            e.contains("backends[0].resource_id: only speech and translator"),
            "{e}"
        );
        let e = err(&backend(
            "https://res.cognitiveservices.azure.com",
            "service='speech'\nregion='westeurope'",
        ));
        assert!(e.contains("backends[0].region: only translator"), "{e}");
        let e = err(&backend(
            "https://res.cognitiveservices.azure.com",
            "service='speech'\nresource_id='res'",
        ));
        assert!(
            e.contains("backends[0].resource_id: \"res\" is not the ARM id"),
            "{e}"
        );
    }

    #[test]
    fn public_url_is_a_base_only_and_the_secret_is_long() {
        let with =
            |server: &str| format!("[server]\n{server}\n{}", backend("http://127.0.0.1:1", ""));
        let c = parse(&with("public_url='https://ai.contoso.com:8443/'")).unwrap();
        assert_eq!(
            c.server.public_url.as_ref().map(url::Url::as_str),
            Some("https://ai.contoso.com:8443/")
        );
        for bad in [
            "https://ai.contoso.com/proxy",
            "https://ai.contoso.com/?x=1",
            "https://ai.contoso.com/#f",
            "ftp://ai.contoso.com",
            "ai.contoso.com",
        ] {
            let e = err(&with(&format!("public_url='{bad}'")));
            assert!(e.contains("server.public_url: "), "{bad}: {e}");
        }
        let e = err(&with("issued_token_secret=' '"));
        assert!(e.contains("server.issued_token_secret: is empty"), "{e}");
        let c = parse(&with("issued_token_secret='short'")).unwrap();
        assert!(c.notes.iter().any(|n| {
            n.level == NoteLevel::Warning
                && n.message
                    .starts_with("server.issued_token_secret: is shorter than 32")
                && !n.message.contains("short'")
        }));
        let c = parse(&with(&format!("issued_token_secret='{}'", "s".repeat(40)))).unwrap();
        assert!(c.server.issued_token_secret.is_some());
        assert!(!format!("{:?}", c.server).contains(&"s".repeat(40)));
    }
}
