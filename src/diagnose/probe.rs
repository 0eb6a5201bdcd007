//! `doctor`'s one authenticated call to a backend of a service beside OpenAI: a read that
//! costs nothing (the voices list, the Search index list, Document Intelligence's model list)
//! or a tiny one (Translator's language detection of one word), on the path the host serves it
//! at. Any answer but 401 and 403 shows the service took the token.

use crate::services::{Service, ServiceHost, service_host};

/// What to call: method, the paths to try in order (the next one after a 404), a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Probe {
    pub(super) post: bool,
    pub(super) paths: Vec<&'static str>,
    pub(super) body: Option<&'static str>,
    /// What the call is, for the report.
    pub(super) what: &'static str,
}

/// The probe of a backend of `service` on `host`; `None` for OpenAI (its deployments are
/// called instead). On a host whose kind is unknown (a private name, the emulator), the custom
/// domain's path first, then the regional one.
pub(super) fn for_service(service: Service, host: &str) -> Option<Probe> {
    let kind = service_host(host).map(|(_, k)| k);
    let regional = host
        .to_ascii_lowercase()
        .contains(".api.cognitive.microsoft.");
    let probe = match service {
        Service::OpenAi => return None,
        Service::Speech => Probe {
            post: false,
            paths: match (kind, regional) {
                (Some(ServiceHost::SpeechRegional), _) | (_, true) => {
                    vec!["/cognitiveservices/voices/list"]
                }
                _ => vec![
                    "/tts/cognitiveservices/voices/list",
                    "/cognitiveservices/voices/list",
                ],
            },
            body: None,
            what: "the voices list",
        },
        Service::Translator => Probe {
            post: true,
            paths: match kind {
                Some(ServiceHost::TranslatorGlobal) => vec!["/detect?api-version=3.0"],
                _ => vec![
                    "/translator/text/v3.0/detect?api-version=3.0",
                    "/detect?api-version=3.0",
                ],
            },
            body: Some(r#"[{"Text":"hello"}]"#),
            what: "language detection of one word",
        },
        Service::Search => Probe {
            post: false,
            paths: vec!["/indexes?api-version=2024-07-01&$select=name"],
            body: None,
            what: "the index list",
        },
        Service::Cognitive => Probe {
            post: false,
            paths: vec!["/documentintelligence/documentModels?api-version=2024-11-30"],
            body: None,
            what: "Document Intelligence's model list",
        },
    };
    Some(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_is_called_where_its_host_serves_it() {
        assert!(for_service(Service::OpenAi, "x.openai.azure.com").is_none());
        let p = for_service(Service::Speech, "westeurope.tts.speech.microsoft.com").unwrap();
        assert_eq!(p.paths, ["/cognitiveservices/voices/list"]);
        let p = for_service(Service::Speech, "res.cognitiveservices.azure.com").unwrap();
        assert_eq!(p.paths[0], "/tts/cognitiveservices/voices/list");
        let p = for_service(Service::Translator, "api.cognitive.microsofttranslator.com").unwrap();
        assert_eq!(p.paths, ["/detect?api-version=3.0"]);
        assert!(p.post && p.body.is_some());
        let p = for_service(Service::Search, "s.search.windows.net").unwrap();
        assert!(p.paths[0].starts_with("/indexes?"));
    }
}
