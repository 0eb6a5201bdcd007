//! Azure AI Translator (Text Translation v3.0): `POST /translate`, `POST /detect`,
//! `GET /languages` on the global host (`api.cognitive.microsofttranslator.com`, played by a
//! `ResourceKind::TranslatorGlobal` listener) and under `/translator/text/v3.0/` on a
//! resource's custom domain.
//!
//! Sources (Microsoft Learn): "Translator v3.0 reference" (authentication headers, error codes
//! `{"error":{"code":<6 digits>,"message":…}}`: 400021 api-version, 400036 target language,
//! 400074 body not JSON, 401000 credentials missing or invalid); "Use Microsoft Entra ID
//! authentication" / "Translator authentication": on the global endpoint an Entra token needs
//! `Ocp-Apim-ResourceId: <ARM id>` and `Ocp-Apim-Subscription-Region: <region>` (optional for
//! a `global` resource); on the custom domain the bearer token alone; keys in
//! `Ocp-Apim-Subscription-Key` (or the `Subscription-Key` query parameter) with
//! `Ocp-Apim-Subscription-Region` for regional and multi-service resources; tokens from
//! `issueToken` as `Authorization: Bearer`. "Languages": the languages list needs no
//! authentication.

use axum::response::Response;
use serde_json::{Value, json};

use super::credential::{self, Accepts, Denied, Granted, Presented};
use super::{Req, sts};
use crate::{Ctx, respond};

/// Where the request reached Translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Global,
    CustomDomain,
}

/// A Translator operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Translate,
    Detect,
    Languages,
    IssueToken,
}

/// The listener of the global host.
pub(crate) fn answer(ctx: &Ctx, req: &Req<'_>) -> Response {
    let path = req.uri.path().trim_end_matches('/');
    match op(req.method, path) {
        Some(op) => serve(ctx, req, Host::Global, op),
        None => error(404, 404000, "The requested resource was not found."),
    }
}

/// The operation at a path relative to Translator's root (`/translate`, …).
pub(crate) fn op(method: &http::Method, path: &str) -> Option<Op> {
    let post = method == http::Method::POST;
    match path.to_ascii_lowercase().as_str() {
        "/translate" if post => Some(Op::Translate),
        "/detect" if post => Some(Op::Detect),
        "/languages" if method == http::Method::GET => Some(Op::Languages),
        "/sts/v1.0/issuetoken" if post => Some(Op::IssueToken),
        _ => None,
    }
}

pub(crate) fn serve(ctx: &Ctx, req: &Req<'_>, host: Host, op: Op) -> Response {
    if req.query("api-version").as_deref() != Some("3.0") && op != Op::IssueToken {
        return error(
            400,
            400021,
            "The API version parameter is missing or invalid.",
        );
    }
    let granted = if op == Op::Languages {
        None
    } else {
        match authenticate(ctx, req, host, op) {
            Ok(granted) => Some(granted),
            Err(_) => {
                return error(
                    401,
                    401000,
                    "The request is not authorized because credentials are missing or invalid.",
                );
            }
        }
    };
    let mut response = match op {
        Op::Translate => translate(req),
        Op::Detect => detect(req),
        Op::Languages => respond::json_value(200, &languages()),
        Op::IssueToken => {
            let o = &ctx.service.options;
            let token = sts::issue(
                &ctx.shared,
                &o.resource_id,
                &o.region,
                o.issued_token_lifetime,
            );
            axum::response::IntoResponse::into_response((
                [(http::header::CONTENT_TYPE, "text/plain; charset=us-ascii")],
                token,
            ))
        }
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    respond::set_header(&mut response, "x-requestid", &request_id);
    if let Some(granted) = granted {
        respond::set_header(&mut response, "x-emulator-auth", granted.name());
    }
    response
}

/// Translator's credential rules on each kind of host.
fn authenticate(ctx: &Ctx, req: &Req<'_>, host: Host, op: Op) -> Result<Granted, Denied> {
    let options = &ctx.service.options;
    let query_key = req.query_ci("subscription-key");
    let presented = credential::presented(
        req.headers,
        &["ocp-apim-subscription-key"],
        query_key.as_deref(),
    );
    let audience = ctx.shared.config.cloud.cognitive_audience();
    let accepts = Accepts {
        key: true,
        issued: op != Op::IssueToken,
        entra: (op != Op::IssueToken).then_some(audience),
        aad: None,
    };
    let granted = credential::check(
        &ctx.shared,
        presented,
        accepts,
        options.key.as_deref(),
        &options.resource_id,
        req.seq,
    )?;
    let region = req
        .header("ocp-apim-subscription-region")
        .map(str::to_owned)
        .or_else(|| req.query_ci("subscription-region"));
    let region_ok = |required: bool| match region.as_deref() {
        Some(r) => r.trim().eq_ignore_ascii_case(&options.region),
        None => !required,
    };
    let regional = !options.region.eq_ignore_ascii_case("global");
    match (&granted, host, presented) {
        // The global host learns the resource from the key; a regional or multi-service
        // resource's key also needs its region.
        (Granted::Key, Host::Global, _) if op != Op::IssueToken && !region_ok(regional) => {
            Err(Denied::BadKey)
        }
        // An Entra token on the global host names its resource and region in headers.
        (Granted::Entra { .. }, Host::Global, Presented::Entra(_)) => {
            let named = req.header("ocp-apim-resourceid").unwrap_or_default();
            if !sts::same_resource(named, &options.resource_id) || named.trim().is_empty() {
                return Err(Denied::OtherResource);
            }
            if region_ok(regional) {
                Ok(granted)
            } else {
                Err(Denied::OtherResource)
            }
        }
        _ => Ok(granted),
    }
}

/// The input texts of a Translator body: a JSON array of `{"Text": …}`.
fn texts(req: &Req<'_>) -> Result<Vec<String>, (u32, &'static str)> {
    const MISSING: (u32, &str) = (400005, "The input text is missing or invalid.");
    let Some(Value::Array(items)) = req.json() else {
        return Err((400074, "The body of the request is not valid JSON."));
    };
    if items.is_empty() {
        return Err(MISSING);
    }
    items
        .iter()
        .map(|item| {
            item.get("Text")
                .or_else(|| item.get("text"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(MISSING)
        })
        .collect()
}

fn translate(req: &Req<'_>) -> Response {
    let targets = req.query_all("to");
    if targets.is_empty() || targets.iter().any(String::is_empty) {
        return error(400, 400036, "The target language is not valid.");
    }
    let texts = match texts(req) {
        Ok(texts) => texts,
        Err((code, message)) => return error(400, code, message),
    };
    let from = req.query("from");
    let results: Vec<Value> = texts
        .iter()
        .map(|text| {
            let translations: Vec<Value> = targets
                .iter()
                .map(|to| json!({"text": format!("[{to}] {text}"), "to": to}))
                .collect();
            if from.is_some() {
                json!({ "translations": translations })
            } else {
                json!({
                    "detectedLanguage": {"language": detect_language(text), "score": 1.0},
                    "translations": translations,
                })
            }
        })
        .collect();
    respond::json_value(200, &Value::Array(results))
}

fn detect(req: &Req<'_>) -> Response {
    match texts(req) {
        Ok(texts) => respond::json_value(
            200,
            &Value::Array(
                texts
                    .iter()
                    .map(|t| {
                        json!({
                            "language": detect_language(t),
                            "score": 1.0,
                            "isTranslationSupported": true,
                            "isTransliterationSupported": false
                        })
                    })
                    .collect(),
            ),
        ),
        Err((code, message)) => error(400, code, message),
    }
}

/// A guess good enough for an emulator: German for a few German words, else English.
fn detect_language(text: &str) -> &'static str {
    let lower = text.to_lowercase();
    if ["hallo", "danke", "guten", " und ", "ist "]
        .iter()
        .any(|w| lower.contains(w))
    {
        "de"
    } else {
        "en"
    }
}

fn languages() -> Value {
    json!({"translation": {
        "de": {"name": "German", "nativeName": "Deutsch", "dir": "ltr"},
        "en": {"name": "English", "nativeName": "English", "dir": "ltr"},
        "fr": {"name": "French", "nativeName": "Français", "dir": "ltr"},
    }})
}

/// Translator's error body: `{"error":{"code":<number>,"message":…}}`.
pub(crate) fn error(status: u16, code: u32, message: &str) -> Response {
    respond::json_value(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_case_insensitive_and_method_bound() {
        assert_eq!(op(&http::Method::POST, "/translate"), Some(Op::Translate));
        assert_eq!(op(&http::Method::GET, "/translate"), None);
        assert_eq!(op(&http::Method::GET, "/Languages"), Some(Op::Languages));
        assert_eq!(
            op(&http::Method::POST, "/sts/v1.0/issueToken"),
            Some(Op::IssueToken)
        );
        assert_eq!(detect_language("Hallo Welt"), "de");
        assert_eq!(detect_language("Hello"), "en");
    }
}
