//! A multi-service Azure AI services resource on its custom domain
//! (`{name}.cognitiveservices.azure.com`): the paths of Speech, Translator, Document
//! Intelligence, Language, Content Safety and Vision, each answered by its service; every
//! other path is the OpenAI data plane, as on a real `AIServices` account.
//!
//! The gateway services here (Document Intelligence, Language, Content Safety, Vision) take
//! `Ocp-Apim-Subscription-Key` or an Entra token for the Cognitive Services audience, and refuse
//! with the gateway's bodies (the same as Azure OpenAI's). Sources (Microsoft Learn):
//! "Authenticate requests to Azure AI services"; Language "Analyze Text — Analyze Text
//! Submit Job" (`POST /language/:analyze-text`, `POST /language/analyze-text/jobs` → 202 with
//! `Operation-Location`, `GET …/jobs/{jobId}`), Content Safety "Text Operations — Analyze
//! Text" (`POST /contentsafety/text:analyze`, `categoriesAnalysis` of Hate, SelfHarm, Sexual,
//! Violence), Image Analysis 4.0 "Analyze Image" (`POST
//! /computervision/imageanalysis:analyze?features=…`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::Response;
use serde_json::{Value, json};

use super::credential::{self, Accepts, Denied, Granted};
use super::{Req, Service, docintel, segments, speech, translator};
use crate::samples::{AzureSample, SampleContext};
use crate::{Ctx, respond};

/// Path prefixes the services here own (lower case); the rest is OpenAI's.
const OWN_PREFIXES: [&str; 10] = [
    "/tts/",
    "/stt/",
    "/speechtotext/",
    "/sts/",
    "/translator/",
    "/documentintelligence/",
    "/formrecognizer/",
    "/language/",
    "/contentsafety/",
    "/computervision/",
];

/// Whether a path belongs to one of the services here rather than to OpenAI.
pub(crate) fn is_own_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    OWN_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The listener of [`crate::ResourceKind::AiServices`], for its own paths.
pub(crate) fn answer(
    ctx: &Ctx,
    req: &Req<'_>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let path = req.uri.path();
    if let Some(op) = speech::op(speech::Host::CustomDomain, req.method, path) {
        return speech::serve(ctx, req, speech::Host::CustomDomain, &op, upgrade);
    }
    let segs = segments(path);
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["translator", "text", "v3.0", rest @ ..] => {
            let sub = format!("/{}", rest.join("/"));
            match translator::op(req.method, &sub) {
                Some(op) => translator::serve(ctx, req, translator::Host::CustomDomain, op),
                None => translator::error(404, 404000, "The requested resource was not found."),
            }
        }
        [
            prefix @ ("documentintelligence" | "formrecognizer"),
            rest @ ..,
        ] => gated(ctx, req, |service, req| {
            docintel::serve(service, req, prefix, rest)
        }),
        ["language", rest @ ..] => gated(ctx, req, |service, req| language(service, req, rest)),
        ["contentsafety", rest @ ..] => gated(ctx, req, |_, req| content_safety(req, rest)),
        ["computervision", rest @ ..] => gated(ctx, req, |_, req| vision(req, rest)),
        _ => speech::not_found(),
    }
}

/// Checks the gateway's credentials, then lets `serve` answer.
fn gated(ctx: &Ctx, req: &Req<'_>, serve: impl FnOnce(&Service, &Req<'_>) -> Response) -> Response {
    let options = &ctx.service.options;
    let audience = ctx.shared.config.cloud.cognitive_audience();
    let presented = credential::presented(req.headers, &["ocp-apim-subscription-key"], None);
    let accepts = Accepts {
        key: true,
        issued: false,
        entra: Some(audience),
        aad: None,
    };
    let sc = SampleContext {
        audience: audience.to_owned(),
        ..SampleContext::default()
    };
    match credential::check(
        &ctx.shared,
        presented,
        accepts,
        options.key.as_deref(),
        &options.resource_id,
        req.seq,
    ) {
        Ok(granted) => {
            let mut response = serve(&ctx.service, req);
            respond::set_header(&mut response, "x-emulator-auth", granted.name());
            if let Granted::Entra { audience } = &granted {
                respond::set_header(&mut response, "x-emulator-audience", audience);
            }
            response
        }
        Err(Denied::BadKey) => respond::sample(AzureSample::InvalidKey401, &sc),
        Err(Denied::KeysDisabled) => respond::sample(AzureSample::KeyAuthDisabled401, &sc),
        Err(Denied::Missing | Denied::BadToken | Denied::OtherResource | Denied::FormRefused) => {
            respond::sample(AzureSample::AudienceIncorrect401, &sc)
        }
    }
}

/// The Cognitive Services gateway's 404 (also for a missing `api-version`).
fn not_found() -> Response {
    speech::not_found()
}

fn documents(body: &Value) -> Option<Vec<(String, String)>> {
    body["analysisInput"]["documents"].as_array().map(|docs| {
        docs.iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap_or("1").to_owned(),
                    d["text"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    })
}

/// The results of one Language task kind; `None` for a kind the emulator does not know.
fn language_results(kind: &str, docs: &[(String, String)]) -> Option<Value> {
    let each = |f: &dyn Fn(&str, &str) -> Value| -> Vec<Value> {
        docs.iter().map(|(id, text)| f(id, text)).collect()
    };
    let documents = match kind {
        "LanguageDetection" => each(
            &|id, _| json!({"id": id, "detectedLanguage": {"name": "English", "iso6391Name": "en", "confidenceScore": 1.0}, "warnings": []}),
        ),
        "SentimentAnalysis" => each(&|id, text| {
            json!({
                "id": id,
                "sentiment": "neutral",
                "confidenceScores": {"positive": 0.1, "neutral": 0.8, "negative": 0.1},
                "sentences": [{"sentiment": "neutral", "confidenceScores": {"positive": 0.1, "neutral": 0.8, "negative": 0.1}, "offset": 0, "length": text.chars().count(), "text": text}],
                "warnings": []
            })
        }),
        "KeyPhraseExtraction" => each(&|id, text| {
            let phrases: Vec<&str> = text
                .split_whitespace()
                .filter(|w| w.len() > 4)
                .take(3)
                .collect();
            json!({"id": id, "keyPhrases": phrases, "warnings": []})
        }),
        _ => return None,
    };
    Some(json!({"documents": documents, "errors": [], "modelVersion": "2024-04-01"}))
}

fn language(service: &Service, req: &Req<'_>, rest: &[&str]) -> Response {
    let Some(api_version) = req.query("api-version") else {
        return not_found();
    };
    let invalid = |message: &str| {
        respond::json_value(
            400,
            &json!({"error": {"code": "InvalidRequest", "message": "Invalid Request.", "innererror": {"code": "InvalidParameterValue", "message": message}}}),
        )
    };
    let post = req.method == http::Method::POST;
    match rest {
        [":analyze-text"] if post => {
            let Some(body) = req.json() else {
                return invalid("The request body is not valid JSON.");
            };
            let kind = body["kind"].as_str().unwrap_or_default();
            let Some(docs) = documents(&body) else {
                return invalid("analysisInput.documents is required.");
            };
            match language_results(kind, &docs) {
                Some(results) => respond::json_value(
                    200,
                    &json!({"kind": format!("{kind}Results"), "results": results}),
                ),
                None => invalid(&format!("'{kind}' is not a supported kind.")),
            }
        }
        ["analyze-text", "jobs"] if post => {
            let Some(body) = req.json() else {
                return invalid("The request body is not valid JSON.");
            };
            let Some(docs) = documents(&body) else {
                return invalid("analysisInput.documents is required.");
            };
            let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
            if tasks.is_empty() {
                return invalid("At least one task is required.");
            }
            let now = "2025-01-01T00:00:00Z";
            let mut items = Vec::new();
            for task in &tasks {
                let kind = task["kind"].as_str().unwrap_or_default();
                let Some(results) = language_results(kind, &docs) else {
                    return invalid(&format!("'{kind}' is not a supported kind."));
                };
                items.push(json!({
                    "kind": format!("{kind}LROResults"),
                    "taskName": task["taskName"].clone(),
                    "lastUpdateDateTime": now,
                    "status": "succeeded",
                    "results": results,
                }));
            }
            let job_id = uuid::Uuid::new_v4().to_string();
            let total = items.len();
            let job = |status: &str, completed: usize, items: Vec<Value>| {
                json!({
                    "jobId": job_id,
                    "displayName": body["displayName"].clone(),
                    "createdDateTime": now,
                    "lastUpdatedDateTime": now,
                    "expirationDateTime": "2025-01-02T00:00:00Z",
                    "status": status,
                    "errors": [],
                    "tasks": {"completed": completed, "failed": 0, "inProgress": total - completed, "total": total, "items": items},
                })
            };
            service.start_operation(
                &format!("lang-{job_id}"),
                job("running", 0, Vec::new()),
                job("succeeded", total, items),
            );
            let location = format!(
                "{}/language/analyze-text/jobs/{job_id}?api-version={api_version}",
                req.base()
            );
            let mut response =
                axum::response::IntoResponse::into_response(http::StatusCode::ACCEPTED);
            respond::set_header(&mut response, "operation-location", &location);
            response
        }
        ["analyze-text", "jobs", id] if req.method == http::Method::GET => {
            match service.poll_operation(&format!("lang-{id}")) {
                Some(job) => respond::json_value(200, &job),
                None => respond::json_value(
                    404,
                    &json!({"error": {"code": "NotFound", "message": "Job not found."}}),
                ),
            }
        }
        _ => not_found(),
    }
}

fn content_safety(req: &Req<'_>, rest: &[&str]) -> Response {
    if req.query("api-version").is_none() {
        return not_found();
    }
    let invalid = |message: &str| {
        respond::json_value(
            400,
            &json!({"error": {"code": "InvalidRequestBody", "message": message}}),
        )
    };
    let categories = json!([
        {"category": "Hate", "severity": 0},
        {"category": "SelfHarm", "severity": 0},
        {"category": "Sexual", "severity": 0},
        {"category": "Violence", "severity": 0},
    ]);
    match rest {
        ["text:analyze"] if req.method == http::Method::POST => {
            match req
                .json()
                .and_then(|b| b["text"].as_str().map(str::to_owned))
            {
                Some(text) if !text.is_empty() => respond::json_value(
                    200,
                    &json!({"blocklistsMatch": [], "categoriesAnalysis": categories}),
                ),
                _ => invalid("The request body is invalid: the field 'text' is required."),
            }
        }
        ["image:analyze"] if req.method == http::Method::POST => match req.json() {
            Some(b) if b["image"]["content"].is_string() || b["image"]["blobUrl"].is_string() => {
                respond::json_value(200, &json!({"categoriesAnalysis": categories}))
            }
            _ => invalid("The request body is invalid: the field 'image' is required."),
        },
        _ => not_found(),
    }
}

fn vision(req: &Req<'_>, rest: &[&str]) -> Response {
    let Some(api_version) = req.query("api-version") else {
        return not_found();
    };
    if rest != ["imageanalysis:analyze"] || req.method != http::Method::POST {
        return not_found();
    }
    let features: Vec<String> = req
        .query("features")
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    if features.is_empty() {
        return respond::json_value(
            400,
            &json!({"error": {"code": "InvalidRequest", "message": "The 'features' query parameter is required.", "innererror": {"code": "InvalidParameter", "message": "features"}}}),
        );
    }
    let has_image = if req
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json")
    {
        req.json().is_some_and(|b| b["url"].is_string())
    } else {
        !req.body.is_empty()
    };
    if !has_image {
        return respond::json_value(
            400,
            &json!({"error": {"code": "InvalidRequest", "message": "The image is missing.", "innererror": {"code": "InvalidImageUrl", "message": "No image."}}}),
        );
    }
    let mut out = json!({"modelVersion": "2023-10-01", "metadata": {"width": 640, "height": 480}, "apiVersion": api_version});
    if features.iter().any(|f| f == "caption") {
        out["captionResult"] = json!({"text": "an emulated picture", "confidence": 0.9});
    }
    if features.iter().any(|f| f == "read") {
        out["readResult"] = json!({"blocks": [{"lines": [{"text": "EMULATED", "boundingPolygon": [], "words": []}]}]});
    }
    if features.iter().any(|f| f == "tags") {
        out["tagsResult"] = json!({"values": [{"name": "emulated", "confidence": 0.9}]});
    }
    respond::json_value(200, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_are_the_services_and_the_rest_is_openai() {
        assert!(is_own_path("/tts/cognitiveservices/v1"));
        assert!(is_own_path("/STT/speech/x"));
        assert!(is_own_path("/documentintelligence/documentModels"));
        assert!(is_own_path("/language/:analyze-text"));
        assert!(!is_own_path("/openai/deployments/x/chat/completions"));
        assert!(!is_own_path("/cognitiveservices/v1"));
    }

    #[test]
    fn language_kinds_have_their_results() {
        let docs = vec![("1".to_owned(), "emulated language service".to_owned())];
        let r = language_results("KeyPhraseExtraction", &docs).unwrap();
        assert_eq!(
            r["documents"][0]["keyPhrases"],
            json!(["emulated", "language", "service"])
        );
        assert!(language_results("SentimentAnalysis", &docs).is_some());
        assert!(language_results("Nope", &docs).is_none());
    }
}
