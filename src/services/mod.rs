//! The Azure AI services a backend can be, and what each one states: its token audience per
//! cloud, the hosts only it is served from, the path families its clients call, and how the
//! proxy's bearer token is presented to it upstream ([`Presenter`]). Plain data: the config
//! builds a backend's [`Presenter`], the request path applies it, diagnosis reads [`Service`].

mod arm;
mod present;

pub use arm::ResourceId;
pub use present::{Presenter, REGION_HEADER, RESOURCE_ID_HEADER, TokenForm};

use crate::cloud::Cloud;
use serde::Deserialize;
use std::fmt;

/// What kind of Azure AI service a backend is: it decides the token audience, the form the
/// token takes upstream and how Azure's refusals are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// Azure OpenAI (and AI Foundry): the default.
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    /// Speech: text to speech, speech to text, batch transcription, their WebSockets.
    Speech,
    /// Translator (Text Translation v3.0).
    Translator,
    /// Azure AI Search's data plane.
    Search,
    /// The other Cognitive Services: Document Intelligence, Language, Content Safety, Vision,
    /// and a multi-service resource's custom domain.
    Cognitive,
}

/// The kind of host a service-specific host name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceHost {
    /// `{region}.tts.speech.microsoft.com`, `{region}.stt.speech.microsoft.com` (and their
    /// sovereign twins): Speech's regional front ends.
    SpeechRegional,
    /// `api.cognitive.microsofttranslator.com` (and the geography hosts `api-eur.…`):
    /// Translator's global endpoint.
    TranslatorGlobal,
    /// `{service}.search.windows.net`: an Azure AI Search service.
    Search,
}

/// Host suffixes that only one service uses, per cloud. Sources (Microsoft Learn): "Speech
/// service in sovereign clouds", "Translator in sovereign clouds", "Azure AI Search in
/// sovereign clouds" / the Search SDKs' endpoints.
const SERVICE_HOSTS: [(Cloud, &str, ServiceHost); 12] = [
    (
        Cloud::Public,
        ".tts.speech.microsoft.com",
        ServiceHost::SpeechRegional,
    ),
    (
        Cloud::Public,
        ".stt.speech.microsoft.com",
        ServiceHost::SpeechRegional,
    ),
    (
        Cloud::Public,
        ".cognitive.microsofttranslator.com",
        ServiceHost::TranslatorGlobal,
    ),
    (Cloud::Public, ".search.windows.net", ServiceHost::Search),
    (
        Cloud::Usgov,
        ".tts.speech.azure.us",
        ServiceHost::SpeechRegional,
    ),
    (
        Cloud::Usgov,
        ".stt.speech.azure.us",
        ServiceHost::SpeechRegional,
    ),
    (
        Cloud::Usgov,
        ".cognitive.microsofttranslator.us",
        ServiceHost::TranslatorGlobal,
    ),
    (Cloud::Usgov, ".search.azure.us", ServiceHost::Search),
    (
        Cloud::China,
        ".tts.speech.azure.cn",
        ServiceHost::SpeechRegional,
    ),
    (
        Cloud::China,
        ".stt.speech.azure.cn",
        ServiceHost::SpeechRegional,
    ),
    (
        Cloud::China,
        ".translator.azure.cn",
        ServiceHost::TranslatorGlobal,
    ),
    (Cloud::China, ".search.azure.cn", ServiceHost::Search),
];

/// First path segments (lower case) each service's clients call; a path of one of these
/// families goes to the only backend of that service when several are configured.
const PATH_FAMILIES: [(&str, Service); 22] = [
    ("cognitiveservices", Service::Speech),
    ("speech", Service::Speech),
    ("tts", Service::Speech),
    ("stt", Service::Speech),
    ("speechtotext", Service::Speech),
    ("texttospeech", Service::Speech),
    ("sts", Service::Speech),
    ("translate", Service::Translator),
    ("detect", Service::Translator),
    ("languages", Service::Translator),
    ("transliterate", Service::Translator),
    ("breaksentence", Service::Translator),
    ("dictionary", Service::Translator),
    ("translator", Service::Translator),
    ("indexes", Service::Search),
    ("indexers", Service::Search),
    ("datasources", Service::Search),
    ("skillsets", Service::Search),
    ("synonymmaps", Service::Search),
    ("servicestats", Service::Search),
    ("documentintelligence", Service::Cognitive),
    ("formrecognizer", Service::Cognitive),
];

/// More Cognitive Services path families (kept apart so each table stays readable).
const COGNITIVE_FAMILIES: [&str; 4] = ["language", "contentsafety", "computervision", "vision"];

impl Service {
    /// Every service, in the order the docs list them.
    pub const ALL: [Service; 5] = [
        Service::OpenAi,
        Service::Speech,
        Service::Translator,
        Service::Search,
        Service::Cognitive,
    ];

    /// The name as written in `service = "…"`.
    pub fn name(self) -> &'static str {
        match self {
            Service::OpenAi => "openai",
            Service::Speech => "speech",
            Service::Translator => "translator",
            Service::Search => "search",
            Service::Cognitive => "cognitive",
        }
    }

    /// The audience of the service's tokens in `cloud`; `None` for OpenAI, whose audience
    /// follows its host (Azure OpenAI and Cognitive Services, or AI Foundry).
    pub fn audience(self, cloud: Cloud) -> Option<&'static str> {
        match self {
            Service::OpenAi => None,
            Service::Speech | Service::Translator | Service::Cognitive => {
                Some(cloud.cognitive_audience())
            }
            Service::Search => Some(search_audience(cloud)),
        }
    }

    /// The service a host that only one service uses belongs to.
    pub fn of_host_kind(kind: ServiceHost) -> Service {
        match kind {
            ServiceHost::SpeechRegional => Service::Speech,
            ServiceHost::TranslatorGlobal => Service::Translator,
            ServiceHost::Search => Service::Search,
        }
    }

    /// Whether a backend of this service may serve `family`, a path's family: the same
    /// service, or a multi-service Cognitive Services resource (which serves Speech and
    /// Translator on its custom domain too).
    pub fn serves(self, family: Service) -> bool {
        self == family
            || (self == Service::Cognitive
                && matches!(family, Service::Speech | Service::Translator))
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Azure AI Search's audience in `cloud`. Source: "Connect your app to Azure AI Search using
/// identities" and the Search SDKs' `SearchAudience` (`https://search.azure.com`, `.us`, `.cn`).
pub fn search_audience(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "https://search.azure.com",
        Cloud::Usgov => "https://search.azure.us",
        Cloud::China => "https://search.azure.cn",
    }
}

/// The cloud and kind of a host only one service uses; `None` for any other host.
pub fn service_host(host: &str) -> Option<(Cloud, ServiceHost)> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    SERVICE_HOSTS
        .iter()
        .find(|(_, suffix, _)| host.ends_with(suffix) && host.len() > suffix.len())
        .map(|(cloud, _, kind)| (*cloud, *kind))
}

/// The service whose clients call `path`, by its first segment; `None` for OpenAI's paths
/// and anything else.
pub fn path_family(path: &str) -> Option<Service> {
    let first = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    // `indexes('hotels')` is Search's OData form of `indexes/hotels`.
    let first = first.split_once('(').map_or(first, |(name, _)| name);
    let first = first.to_ascii_lowercase();
    if COGNITIVE_FAMILIES.contains(&first.as_str()) {
        return Some(Service::Cognitive);
    }
    PATH_FAMILIES
        .iter()
        .find(|(name, _)| *name == first)
        .map(|(_, service)| *service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_hosts_are_matched_by_suffix_and_cloud() {
        assert_eq!(
            service_host("westeurope.tts.speech.microsoft.com"),
            Some((Cloud::Public, ServiceHost::SpeechRegional))
        );
        assert_eq!(
            service_host("API.Cognitive.MicrosoftTranslator.com."),
            Some((Cloud::Public, ServiceHost::TranslatorGlobal))
        );
        assert_eq!(
            service_host("api-eur.cognitive.microsofttranslator.com"),
            Some((Cloud::Public, ServiceHost::TranslatorGlobal))
        );
        assert_eq!(
            service_host("mysearch.search.azure.us"),
            Some((Cloud::Usgov, ServiceHost::Search))
        );
        assert_eq!(
            service_host("api.translator.azure.cn"),
            Some((Cloud::China, ServiceHost::TranslatorGlobal))
        );
        assert_eq!(service_host("search.windows.net"), None);
        assert_eq!(service_host("myres.cognitiveservices.azure.com"), None);
        assert_eq!(service_host("127.0.0.1"), None);
    }

    #[test]
    fn audiences_follow_the_service_and_cloud() {
        assert_eq!(
            Service::Search.audience(Cloud::Public),
            Some("https://search.azure.com")
        );
        assert_eq!(
            Service::Search.audience(Cloud::China),
            Some("https://search.azure.cn")
        );
        assert_eq!(
            Service::Speech.audience(Cloud::Usgov),
            Some("https://cognitiveservices.azure.us")
        );
        assert_eq!(Service::OpenAi.audience(Cloud::Public), None);
    }

    #[test]
    fn paths_belong_to_the_family_of_their_first_segment() {
        assert_eq!(path_family("/cognitiveservices/v1"), Some(Service::Speech));
        assert_eq!(
            path_family("/STT/speech/recognition/conversation/cognitiveservices/v1"),
            Some(Service::Speech)
        );
        assert_eq!(path_family("/translate"), Some(Service::Translator));
        assert_eq!(
            path_family("/indexes('hotels')/docs/search.post.search"),
            Some(Service::Search)
        );
        assert_eq!(
            path_family("/documentintelligence/documentModels"),
            Some(Service::Cognitive)
        );
        assert_eq!(
            path_family("/language/:analyze-text"),
            Some(Service::Cognitive)
        );
        assert_eq!(path_family("/openai/deployments/d/chat/completions"), None);
        assert_eq!(path_family("/"), None);
        assert!(Service::Cognitive.serves(Service::Speech));
        assert!(!Service::Speech.serves(Service::Cognitive));
        assert!(!Service::OpenAi.serves(Service::Search));
    }
}
