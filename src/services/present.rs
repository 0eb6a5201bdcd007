//! How the proxy's bearer token goes upstream to each service: a plain `Authorization: Bearer`,
//! Speech's `Bearer aad#{resource id}#{token}` on the endpoints that need it, Translator's
//! `Ocp-Apim-ResourceId` and `Ocp-Apim-Subscription-Region` beside the bearer. Built once per
//! backend when the config is read; applied to each attempt's headers.

use super::{ResourceId, Service};
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// Translator's header naming the resource an Entra token is for (global endpoint).
pub const RESOURCE_ID_HEADER: HeaderName = HeaderName::from_static("ocp-apim-resourceid");
/// The region header of Translator (and of key callers of the Cognitive Services gateway).
pub const REGION_HEADER: HeaderName = HeaderName::from_static("ocp-apim-subscription-region");

/// The shape the bearer takes on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenForm {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// Speech's `Authorization: Bearer aad#<resource id>#<token>`.
    SpeechAad,
}

/// How one backend presents the proxy's token.
#[derive(Debug, Clone)]
pub struct Presenter {
    service: Service,
    /// Speech with a resource id: `aad#{resource id}#`, put before the token on the front ends.
    aad_prefix: Option<String>,
    /// Translator with a region: the resource id and region headers.
    translator: Option<(HeaderValue, HeaderValue)>,
}

impl Presenter {
    /// The presenter of a backend of `service`; `resource_id` and `region` as configured (the
    /// config has checked which services take them). Errs when a value cannot be a header.
    pub fn new(
        service: Service,
        resource_id: Option<&ResourceId>,
        region: Option<&str>,
    ) -> Result<Presenter, String> {
        let aad_prefix = match (service, resource_id) {
            (Service::Speech, Some(id)) => Some(format!("aad#{id}#")),
            _ => None,
        };
        let translator = match (service, resource_id, region) {
            (Service::Translator, Some(id), Some(region)) => Some((
                HeaderValue::from_str(id.as_str())
                    .map_err(|_| format!("{id:?} cannot be sent as a header"))?,
                HeaderValue::from_str(region)
                    .map_err(|_| format!("{region:?} cannot be sent as a header"))?,
            )),
            _ => None,
        };
        Ok(Presenter {
            service,
            aad_prefix,
            translator,
        })
    }

    /// The presenter of a plain OpenAI backend.
    pub fn openai() -> Presenter {
        Presenter {
            service: Service::OpenAi,
            aad_prefix: None,
            translator: None,
        }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// The form the token takes on a request to `path` (the upstream path).
    pub fn form(&self, path: &str) -> TokenForm {
        match &self.aad_prefix {
            Some(_) if speech_front_end(path) => TokenForm::SpeechAad,
            _ => TokenForm::Bearer,
        }
    }

    /// Whether Translator's resource id and region headers go beside the token.
    pub fn sends_translator_headers(&self) -> bool {
        self.translator.is_some()
    }

    /// Puts the token (`bearer`: `Bearer <token>`) into `headers` of a request to `path` in the
    /// form the service needs, with the headers that go beside it.
    pub fn apply(&self, path: &str, bearer: &HeaderValue, headers: &mut HeaderMap) {
        let value = match (&self.aad_prefix, self.form(path)) {
            (Some(prefix), TokenForm::SpeechAad) => {
                speech_aad(prefix, bearer).unwrap_or_else(|| bearer.clone())
            }
            _ => bearer.clone(),
        };
        headers.insert(AUTHORIZATION, value);
        if let Some((resource_id, region)) = &self.translator {
            headers.insert(RESOURCE_ID_HEADER, resource_id.clone());
            headers.insert(REGION_HEADER, region.clone());
        }
    }
}

/// `Bearer aad#{resource id}#{token}` from `Bearer {token}`; marked sensitive.
fn speech_aad(prefix: &str, bearer: &HeaderValue) -> Option<HeaderValue> {
    let token = bearer.as_bytes().strip_prefix(b"Bearer ")?;
    let mut value = Vec::with_capacity(7 + prefix.len() + token.len());
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(prefix.as_bytes());
    value.extend_from_slice(token);
    let mut value = HeaderValue::from_bytes(&value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Speech's front ends — text to speech (`/cognitiveservices/v1`, the voices list, its
/// WebSocket) and speech to text (`/speech/…`, REST for short audio and the WebSockets) —
/// which take an Entra token only as `aad#{resource id}#{token}` on the regional hosts (and
/// also so on a custom domain, under `/tts` and `/stt`). Sources: "Text to speech REST API"
/// and "Speech to text REST API for short audio" (Authentication), "Microsoft Entra
/// authentication with the Speech SDK". Batch transcription (`/speechtotext`), `issueToken`
/// and the rest are the Cognitive Services gateway, which takes the bearer alone.
fn speech_front_end(path: &str) -> bool {
    let mut segments = path.trim_start_matches('/').split('/');
    let mut first = segments.next().unwrap_or_default();
    if first.eq_ignore_ascii_case("tts") || first.eq_ignore_ascii_case("stt") {
        first = segments.next().unwrap_or_default();
    }
    first.eq_ignore_ascii_case("cognitiveservices") || first.eq_ignore_ascii_case("speech")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RID: &str = "/subscriptions/00000000-0000-4000-8000-0000000000e1/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/speechy";

    fn presented(p: &Presenter, path: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        p.apply(path, &HeaderValue::from_static("Bearer tok.en.x"), &mut h);
        h
    }

    #[test]
    fn speech_front_ends_get_the_aad_form_and_the_gateway_a_plain_bearer() {
        let id = ResourceId::parse(RID).unwrap();
        let p = Presenter::new(Service::Speech, Some(&id), None).unwrap();
        let aad = format!("Bearer aad#{RID}#tok.en.x");
        for path in [
            "/cognitiveservices/v1",
            "/tts/cognitiveservices/voices/list",
            "/cognitiveservices/websocket/v1",
            "/speech/recognition/conversation/cognitiveservices/v1",
            "/STT/speech/universal/v2",
        ] {
            let h = presented(&p, path);
            assert_eq!(h[AUTHORIZATION], aad.as_str(), "{path}");
            assert!(h[AUTHORIZATION].is_sensitive());
            assert_eq!(p.form(path), TokenForm::SpeechAad);
        }
        for path in [
            "/speechtotext/v3.2/transcriptions",
            "/sts/v1.0/issueToken",
            "/texttospeech/batchsyntheses",
        ] {
            assert_eq!(
                presented(&p, path)[AUTHORIZATION],
                "Bearer tok.en.x",
                "{path}"
            );
            assert_eq!(p.form(path), TokenForm::Bearer);
        }
        let plain = Presenter::new(Service::Speech, None, None).unwrap();
        assert_eq!(
            presented(&plain, "/cognitiveservices/v1")[AUTHORIZATION],
            "Bearer tok.en.x"
        );
    }

    #[test]
    fn translator_with_a_region_sends_the_resource_and_region_headers() {
        let id = ResourceId::parse(RID).unwrap();
        let p = Presenter::new(Service::Translator, Some(&id), Some("westeurope")).unwrap();
        let h = presented(&p, "/translate");
        assert_eq!(h[AUTHORIZATION], "Bearer tok.en.x");
        assert_eq!(h[RESOURCE_ID_HEADER], RID);
        assert_eq!(h[REGION_HEADER], "westeurope");
        let custom = Presenter::new(Service::Translator, Some(&id), None).unwrap();
        let h = presented(&custom, "/translator/text/v3.0/translate");
        assert_eq!(h.len(), 1);
        for other in [Service::OpenAi, Service::Search, Service::Cognitive] {
            let p = Presenter::new(other, Some(&id), Some("westeurope")).unwrap();
            let h = presented(&p, "/cognitiveservices/v1");
            assert_eq!(h.len(), 1, "{other}");
            assert_eq!(h[AUTHORIZATION], "Bearer tok.en.x");
        }
    }
}
