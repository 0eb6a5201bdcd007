//! Speech over REST and WebSocket, on both kinds of host it has: a resource's custom domain
//! (`{name}.cognitiveservices.azure.com`, paths under `/tts`, `/stt`, `/speechtotext`, `/sts`)
//! and the regional hosts (`{region}.tts.speech.microsoft.com`,
//! `{region}.stt.speech.microsoft.com`, `{region}.api.cognitive.microsoft.com`), which one
//! `ResourceKind::SpeechRegional` listener plays together.
//!
//! Sources (Microsoft Learn):
//! - "Text to speech REST API": `POST /cognitiveservices/v1` (SSML in, audio out,
//!   `X-Microsoft-OutputFormat`, 415 for another `Content-Type`), `GET
//!   /cognitiveservices/voices/list`; `Ocp-Apim-Subscription-Key` or `Authorization: Bearer`.
//! - "Speech to text REST API for short audio": `POST
//!   /speech/recognition/conversation/cognitiveservices/v1?language=…`, `language` required
//!   (400), 401 for an invalid key or token, 403 for a missing one; `{"RecognitionStatus",
//!   "DisplayText","Offset","Duration"}`.
//! - the include "Authentication" of both: `issueToken` exchanges a key for a 10-minute JWT;
//!   with Microsoft Entra ID the bearer value is `aad#{resource id}#{Entra token}`.
//! - "Microsoft Entra authentication with the Speech SDK": the same `aad#` form for
//!   recognizers and synthesizers, which connect to the regional hosts; a custom domain is
//!   required. `SpeechConfig.FromEndpoint(Uri, TokenCredential)` (Speech SDK 1.43) sends a
//!   plain Entra token to the custom domain, so the custom domain takes both forms.
//! - "Use Speech service through a private endpoint" (`speech-services-private-link`):
//!   custom-domain paths are the regional host's offering (`tts`, `stt`) followed by the
//!   regional path; `/speechtotext/…` keeps its path; the Speech to text REST API on a custom
//!   domain is the Cognitive Services endpoint, which takes a plain Entra bearer token.
//! - "Speech to text REST API" / "Create a batch transcription": `/speechtotext/v3.x/
//!   transcriptions` (and `transcriptions:submit?api-version=2024-11-15`), 201 with `self`,
//!   status `NotStarted` → `Running` → `Succeeded`, result files as blob SAS URLs. Entra needs
//!   a custom domain: the regional `api.cognitive.microsoft.com` host refuses Entra tokens.
//!
//! Refusals: the Speech front ends (TTS, short-audio STT, WebSocket) answer 401 (403 for a
//! missing credential on short-audio STT) with an empty body; `issueToken` and
//! `/speechtotext` are behind the Cognitive Services gateway and answer its JSON bodies.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::credential::{self, Accepts, Denied, Granted};
use super::{Req, Service, blob_sas_url, empty, segments, sts};
use crate::Ctx;
use crate::respond;
use crate::samples::{AzureSample, SampleContext};

/// One Speech operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    IssueToken,
    Synthesize,
    Voices,
    Recognize,
    /// A WebSocket of the SDKs (recognition, synthesis).
    Socket,
    /// The Speech to text REST API under `/speechtotext/`; the segments after it.
    Batch(Vec<String>),
}

/// Which kind of host the request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    CustomDomain,
    Regional,
}

/// The listener of [`ResourceKind::SpeechRegional`].
pub(crate) fn answer(
    ctx: &Ctx,
    req: &Req<'_>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match op(Host::Regional, req.method, req.uri.path()) {
        Some(op) => serve(ctx, req, Host::Regional, &op, upgrade),
        None => not_found(),
    }
}

/// The operation a method and path name on a host; `None` for anything else.
pub(crate) fn op(host: Host, method: &http::Method, path: &str) -> Option<Op> {
    let get = method == http::Method::GET;
    let post = method == http::Method::POST;
    let lower = path.trim_end_matches('/').to_ascii_lowercase();
    if lower == "/sts/v1.0/issuetoken" && post {
        return Some(Op::IssueToken);
    }
    if lower.starts_with("/speechtotext/") {
        return Some(Op::Batch(segments(path).split_off(1)));
    }
    let (tts, stt) = match host {
        Host::CustomDomain => (
            lower.strip_prefix("/tts").map(str::to_owned),
            lower.strip_prefix("/stt").map(str::to_owned),
        ),
        Host::Regional => (Some(lower.clone()), Some(lower.clone())),
    };
    match tts.as_deref() {
        Some("/cognitiveservices/v1") if post => return Some(Op::Synthesize),
        Some("/cognitiveservices/voices/list") if get => return Some(Op::Voices),
        Some("/cognitiveservices/websocket/v1") if get => return Some(Op::Socket),
        _ => {}
    }
    match stt.as_deref() {
        Some("/speech/recognition/conversation/cognitiveservices/v1") if post => {
            Some(Op::Recognize)
        }
        Some(p) if p.starts_with("/speech/") && get => Some(Op::Socket),
        _ => None,
    }
}

/// Answers one Speech operation.
pub(crate) fn serve(
    ctx: &Ctx,
    req: &Req<'_>,
    host: Host,
    op: &Op,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let service = &ctx.service;
    let options = &service.options;
    let audience = ctx.shared.config.cloud.cognitive_audience();
    let accepts = accepts(host, op, audience);
    let presented = credential::presented(req.headers, &["ocp-apim-subscription-key"], None);
    let granted = match credential::check(
        &ctx.shared,
        presented,
        accepts,
        options.key.as_deref(),
        &options.resource_id,
        req.seq,
    ) {
        Ok(granted) => granted,
        Err(denied) => return refuse(host, op, denied, audience),
    };
    let mut response = match op {
        Op::IssueToken => issue_token(ctx),
        Op::Synthesize => synthesize(req),
        Op::Voices => respond::json_value(200, &voices()),
        Op::Recognize => recognize(req),
        Op::Socket => match upgrade {
            Ok(upgrade) => upgrade.on_upgrade(crate::speech::echo).into_response(),
            Err(_) => respond::json_value(
                400,
                &json!({"error": {"code": "BadRequest", "message": "Expected a WebSocket upgrade."}}),
            ),
        },
        Op::Batch(rest) => batch(service, req, rest),
    };
    respond::set_header(&mut response, "x-emulator-auth", granted.name());
    if let Granted::Entra { audience } | Granted::Aad { audience } = &granted {
        respond::set_header(&mut response, "x-emulator-audience", audience);
    }
    response
}

/// The credential forms each endpoint takes on each kind of host.
fn accepts(host: Host, op: &Op, audience: &'static str) -> Accepts<'static> {
    let custom = host == Host::CustomDomain;
    match op {
        // The front ends: key, issued token, the aad# form everywhere; a plain Entra token
        // only where the host identifies the resource (custom domain).
        Op::Synthesize | Op::Voices | Op::Recognize | Op::Socket => Accepts {
            key: true,
            issued: true,
            entra: custom.then_some(audience),
            aad: Some(audience),
        },
        // The Cognitive Services gateway: a key, or (custom domain only) a plain Entra token.
        Op::IssueToken => Accepts {
            key: true,
            issued: false,
            entra: custom.then_some(audience),
            aad: None,
        },
        Op::Batch(_) => Accepts {
            key: true,
            issued: true,
            entra: custom.then_some(audience),
            aad: None,
        },
    }
}

/// Speech's answer to a refused credential.
fn refuse(host: Host, op: &Op, denied: Denied, audience: &str) -> Response {
    let sc = SampleContext {
        audience: audience.to_owned(),
        ..SampleContext::default()
    };
    match op {
        Op::Recognize if denied == Denied::Missing => empty(403),
        Op::Synthesize | Op::Voices | Op::Recognize | Op::Socket => empty(401),
        Op::IssueToken | Op::Batch(_) => match denied {
            Denied::Missing if host == Host::Regional => respond::json(
                401,
                crate::samples::error_body(
                    "401",
                    "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
                ),
            ),
            Denied::FormRefused if host == Host::Regional && *op == Op::IssueToken => {
                respond::sample(AzureSample::RegionalEndpoint400, &sc)
            }
            Denied::BadKey => respond::sample(AzureSample::InvalidKey401, &sc),
            Denied::KeysDisabled => respond::sample(AzureSample::KeyAuthDisabled401, &sc),
            Denied::Missing | Denied::BadToken | Denied::OtherResource | Denied::FormRefused => {
                respond::sample(AzureSample::AudienceIncorrect401, &sc)
            }
        },
    }
}

fn issue_token(ctx: &Ctx) -> Response {
    let options = &ctx.service.options;
    let token = sts::issue(
        &ctx.shared,
        &options.resource_id,
        &options.region,
        options.issued_token_lifetime,
    );
    (
        [(http::header::CONTENT_TYPE, "text/plain; charset=us-ascii")],
        token,
    )
        .into_response()
}

/// `POST …/cognitiveservices/v1`: SSML in, audio of the requested format out.
fn synthesize(req: &Req<'_>) -> Response {
    let content_type = req.header("content-type").unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/ssml+xml")
    {
        return empty(415);
    }
    let Some(format) = req.header("x-microsoft-outputformat") else {
        return empty(400);
    };
    let ssml = String::from_utf8_lossy(req.body);
    if !ssml.contains("<speak") {
        return empty(400);
    }
    let (mime, audio) = audio(format, ssml.len());
    ([(http::header::CONTENT_TYPE, mime)], audio).into_response()
}

/// Bytes standing for speech: a RIFF/WAVE file of silence for `riff-*` formats, raw silence
/// for `raw-*`, a marked blob otherwise; longer for longer input.
pub(crate) fn audio(format: &str, text_len: usize) -> (&'static str, Vec<u8>) {
    let samples = 160 * text_len.clamp(1, 4000);
    let pcm_bytes = u32::try_from(samples * 2).unwrap_or(u32::MAX / 2);
    let f = format.to_ascii_lowercase();
    if f.starts_with("riff-") {
        let rate: u32 = if f.contains("8khz") {
            8000
        } else if f.contains("16khz") {
            16000
        } else if f.contains("48khz") {
            48000
        } else {
            24000
        };
        let mut out = Vec::with_capacity(44 + samples * 2);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + pcm_bytes).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // PCM
        out.extend_from_slice(&1u16.to_le_bytes()); // mono
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2).to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&pcm_bytes.to_le_bytes());
        out.resize(44 + samples * 2, 0);
        return ("audio/x-wav", out);
    }
    if f.starts_with("raw-") {
        return ("audio/x-wav", vec![0; samples * 2]);
    }
    let mime = if f.contains("mp3") {
        "audio/mpeg"
    } else if f.starts_with("ogg-") {
        "audio/ogg"
    } else if f.starts_with("webm-") {
        "audio/webm"
    } else {
        "application/octet-stream"
    };
    let mut out = format!("EMULATED-AUDIO {f}\n").into_bytes();
    out.resize(out.len() + samples / 4, 0);
    (mime, out)
}

fn voices() -> Value {
    let voice = |short: &str, display: &str, gender: &str, locale: &str, locale_name: &str| {
        let name_part = short.rsplit('-').next().unwrap_or(short);
        json!({
            "Name": format!("Microsoft Server Speech Text to Speech Voice ({locale}, {name_part})"),
            "DisplayName": display,
            "LocalName": display,
            "ShortName": short,
            "Gender": gender,
            "Locale": locale,
            "LocaleName": locale_name,
            "SampleRateHertz": "24000",
            "VoiceType": "Neural",
            "Status": "GA",
            "WordsPerMinute": "150"
        })
    };
    json!([
        voice(
            "en-US-JennyNeural",
            "Jenny",
            "Female",
            "en-US",
            "English (United States)"
        ),
        voice(
            "en-US-GuyNeural",
            "Guy",
            "Male",
            "en-US",
            "English (United States)"
        ),
        voice(
            "de-DE-KatjaNeural",
            "Katja",
            "Female",
            "de-DE",
            "German (Germany)"
        ),
    ])
}

/// `POST …/speech/recognition/conversation/cognitiveservices/v1?language=…`.
fn recognize(req: &Req<'_>) -> Response {
    let Some(language) = req.query("language").filter(|l| !l.is_empty()) else {
        return empty(400);
    };
    if req.body.is_empty() {
        return respond::json_value(
            200,
            &json!({"RecognitionStatus": "InitialSilenceTimeout", "Offset": 0, "Duration": 0}),
        );
    }
    let text = format!(
        "Emulated transcription of {} bytes of {language} audio.",
        req.body.len()
    );
    let duration = u64::try_from(req.body.len())
        .unwrap_or(0)
        .saturating_mul(312);
    let detailed = req.query("format").as_deref() == Some("detailed");
    let body = if detailed {
        json!({
            "RecognitionStatus": "Success",
            "Offset": 100000,
            "Duration": duration,
            "NBest": [{
                "Confidence": 0.97,
                "Lexical": text.to_lowercase(),
                "ITN": text.to_lowercase(),
                "MaskedITN": text.to_lowercase(),
                "Display": text,
            }]
        })
    } else {
        json!({
            "RecognitionStatus": "Success",
            "DisplayText": text,
            "Offset": 100000,
            "Duration": duration,
        })
    };
    respond::json_value(200, &body)
}

/// The Speech to text REST API's transcriptions: create, get (status moves on with each
/// poll), list their files, list them.
fn batch(service: &Service, req: &Req<'_>, rest: &[String]) -> Response {
    let base = req.base();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    // `/speechtotext/v3.2/…` or `/speechtotext/…?api-version=2024-11-15`.
    let (version, tail): (Option<&str>, &[&str]) = match rest.split_first() {
        Some((v, tail)) if v.starts_with("v3.") => (Some(v), tail),
        _ => (None, &rest[..]),
    };
    let api_version = req.query("api-version");
    if version.is_none() && api_version.is_none() {
        return not_found();
    }
    let prefix = match version {
        Some(v) => format!("{base}/speechtotext/{v}"),
        None => format!("{base}/speechtotext"),
    };
    let suffix = api_version
        .as_deref()
        .map(|v| format!("?api-version={v}"))
        .unwrap_or_default();
    let post = req.method == http::Method::POST;
    let get = req.method == http::Method::GET;
    match tail {
        ["transcriptions"] | ["transcriptions:submit"] if post => {
            create_transcription(service, req, &prefix, &suffix)
        }
        ["transcriptions"] if get => {
            let values = service.operations_with_prefix("stt-");
            respond::json_value(200, &json!({ "values": values }))
        }
        ["transcriptions", id] if get => match service.poll_operation(&format!("stt-{id}")) {
            Some(v) => respond::json_value(200, &v),
            None => entity_not_found(),
        },
        ["transcriptions", id, "files"] if get => {
            if service.poll_operation(&format!("stt-{id}")).is_none() {
                return entity_not_found();
            }
            let file_id = crate::keys::derived_uuid(&format!("file-{id}"));
            respond::json_value(
                200,
                &json!({"values": [{
                    "self": format!("{prefix}/transcriptions/{id}/files/{file_id}{suffix}"),
                    "name": "contenturl_0.json",
                    "kind": "Transcription",
                    "properties": {"size": 1024},
                    "createdDateTime": "2025-01-01T00:00:00Z",
                    "links": {"contentUrl": blob_sas_url("transcriptions", &format!("{id}/contenturl_0.json"))}
                }]}),
            )
        }
        _ => not_found(),
    }
}

fn create_transcription(service: &Service, req: &Req<'_>, prefix: &str, suffix: &str) -> Response {
    let Some(body) = req.json().filter(Value::is_object) else {
        return invalid_payload("The request body is not valid JSON.");
    };
    let has_input = body["contentUrls"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
        || body["contentContainerUrl"].is_string();
    if !has_input {
        return invalid_payload("Either contentUrls or contentContainerUrl must be provided.");
    }
    let Some(locale) = body["locale"].as_str() else {
        return invalid_payload("The locale is missing.");
    };
    let id = uuid::Uuid::new_v4().to_string();
    let this = format!("{prefix}/transcriptions/{id}{suffix}");
    let display = body["displayName"].as_str().unwrap_or("transcription");
    let with_status = |status: &str| {
        json!({
            "self": this,
            "displayName": display,
            "locale": locale,
            "links": {"files": format!("{prefix}/transcriptions/{id}/files{suffix}")},
            "properties": {
                "diarizationEnabled": false,
                "wordLevelTimestampsEnabled": false,
                "punctuationMode": "DictatedAndAutomatic",
                "profanityFilterMode": "Masked"
            },
            "createdDateTime": "2025-01-01T00:00:00Z",
            "lastActionDateTime": "2025-01-01T00:00:00Z",
            "status": status,
        })
    };
    service.start_operation(
        &format!("stt-{id}"),
        with_status("Running"),
        with_status("Succeeded"),
    );
    let mut response = respond::json_value(201, &with_status("NotStarted"));
    respond::set_header(&mut response, "location", &this);
    response
}

fn invalid_payload(message: &str) -> Response {
    respond::json_value(400, &json!({"code": "InvalidPayload", "message": message}))
}

fn entity_not_found() -> Response {
    respond::json_value(
        404,
        &json!({"code": "NotFound", "message": "The specified entity cannot be found."}),
    )
}

/// The Cognitive Services gateway's 404.
pub(crate) fn not_found() -> Response {
    respond::sample(AzureSample::ResourceNotFound404, &SampleContext::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn paths_map_to_operations_per_host() {
        let c = Host::CustomDomain;
        let r = Host::Regional;
        assert_eq!(
            op(c, &Method::POST, "/tts/cognitiveservices/v1"),
            Some(Op::Synthesize)
        );
        assert_eq!(
            op(r, &Method::POST, "/cognitiveservices/v1"),
            Some(Op::Synthesize)
        );
        assert_eq!(op(c, &Method::POST, "/cognitiveservices/v1"), None);
        assert_eq!(
            op(c, &Method::GET, "/tts/cognitiveservices/voices/list"),
            Some(Op::Voices)
        );
        assert_eq!(
            op(
                c,
                &Method::POST,
                "/stt/speech/recognition/conversation/cognitiveservices/v1"
            ),
            Some(Op::Recognize)
        );
        assert_eq!(
            op(
                c,
                &Method::GET,
                "/stt/speech/recognition/conversation/cognitiveservices/v1"
            ),
            Some(Op::Socket)
        );
        assert_eq!(
            op(
                r,
                &Method::GET,
                "/speech/recognition/interactive/cognitiveservices/v1"
            ),
            Some(Op::Socket)
        );
        assert_eq!(
            op(r, &Method::GET, "/cognitiveservices/websocket/v1"),
            Some(Op::Socket)
        );
        assert_eq!(
            op(r, &Method::POST, "/sts/v1.0/issueToken"),
            Some(Op::IssueToken)
        );
        assert_eq!(
            op(c, &Method::POST, "/sts/v1.0/issuetoken"),
            Some(Op::IssueToken)
        );
        assert_eq!(op(c, &Method::GET, "/sts/v1.0/issueToken"), None);
        assert_eq!(
            op(r, &Method::GET, "/speechtotext/v3.2/transcriptions/x"),
            Some(Op::Batch(vec![
                "v3.2".into(),
                "transcriptions".into(),
                "x".into()
            ]))
        );
    }

    #[test]
    fn audio_is_a_wave_file_for_riff_formats() {
        let (mime, bytes) = audio("riff-24khz-16bit-mono-pcm", 10);
        assert_eq!(mime, "audio/x-wav");
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(&bytes[8..12], b"WAVE");
        assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 24000);
        assert_eq!(bytes.len(), 44 + 3200);
        assert_eq!(audio("audio-16khz-32kbitrate-mono-mp3", 1).0, "audio/mpeg");
        assert!(audio("x", 1000).1.len() > audio("x", 1).1.len());
    }
}
