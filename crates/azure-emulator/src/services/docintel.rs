//! Document Intelligence on a resource's custom domain: analyze as a long-running operation
//! and the model list, under `/documentintelligence/` (API 2024-11-30) and the older
//! `/formrecognizer/` (2023-07-31).
//!
//! Sources (Microsoft Learn): "Document Intelligence REST API 2024-11-30 — Analyze Document"
//! (`POST /documentintelligence/documentModels/{modelId}:analyze?api-version=…`, body
//! `{"urlSource"}` or `{"base64Source"}` as JSON or the raw document, `202 Accepted` with
//! `Operation-Location: {endpoint}/documentintelligence/documentModels/{modelId}/
//! analyzeResults/{resultId}?api-version=…` and `apim-request-id`); "Get Analyze Result"
//! (`{"status":"notStarted"|"running"|"succeeded"|"failed", "createdDateTime",
//! "lastUpdatedDateTime", "analyzeResult"}`); "List Models" (`{"value":[…],"nextLink":…}`);
//! the Python SDK `azure-ai-documentintelligence` 1.0 reads the result id from
//! `Operation-Location` with `[^:]+://[^/]+/documentintelligence/.+/([^?/]+)`.

use axum::response::Response;
use serde_json::{Value, json};

use super::{FOREIGN_HOST, Req, Service, blob_sas_url};
use crate::respond;

/// The prebuilt models the resource lists, in order.
const MODELS: [(&str, &str); 8] = [
    ("prebuilt-read", "Extract text from documents."),
    (
        "prebuilt-layout",
        "Extract text and layout information from documents.",
    ),
    (
        "prebuilt-document",
        "Extract key-value pairs, layout and text.",
    ),
    ("prebuilt-invoice", "Extract key information from invoices."),
    ("prebuilt-receipt", "Extract key information from receipts."),
    (
        "prebuilt-idDocument",
        "Extract key information from passports and ID cards.",
    ),
    (
        "prebuilt-businessCard",
        "Extract key information from business cards.",
    ),
    (
        "prebuilt-tax.us.w2",
        "Extract key information from IRS US W2 tax forms.",
    ),
];

/// A Document Intelligence request under `/{prefix}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Analyze(String),
    Result(String, String),
    ListModels,
    GetModel(String),
    NotFound,
}

impl Route {
    fn parse(method: &http::Method, rest: &[&str]) -> Route {
        let get = method == http::Method::GET;
        match rest {
            ["documentModels"] if get => Route::ListModels,
            ["documentModels", model] if method == http::Method::POST => {
                match model.strip_suffix(":analyze") {
                    Some(id) if !id.is_empty() => Route::Analyze(id.to_owned()),
                    _ => Route::NotFound,
                }
            }
            ["documentModels", model] if get => Route::GetModel((*model).to_owned()),
            ["documentModels", model, "analyzeResults", result] if get => {
                Route::Result((*model).to_owned(), (*result).to_owned())
            }
            _ => Route::NotFound,
        }
    }
}

/// Answers a request under `/{prefix}/` (`documentintelligence` or `formrecognizer`); `rest`
/// is the path after it.
pub(crate) fn serve(service: &Service, req: &Req<'_>, prefix: &str, rest: &[&str]) -> Response {
    let Some(api_version) = req.query("api-version") else {
        return error(404, "404", "Resource not found", None);
    };
    let base = req.base();
    match Route::parse(req.method, rest) {
        Route::NotFound => error(404, "404", "Resource not found", None),
        Route::ListModels => list_models(service, &base, prefix, &api_version, req),
        Route::GetModel(id) => match MODELS.iter().find(|(m, _)| *m == id) {
            Some((id, description)) => {
                respond::json_value(200, &model(service, id, description, &api_version))
            }
            None => model_not_found(&id),
        },
        Route::Analyze(model_id) => analyze(service, req, &base, prefix, &model_id, &api_version),
        Route::Result(model_id, result_id) => {
            match service.poll_operation(&format!("di-{model_id}/{result_id}")) {
                Some(body) => {
                    let mut response = respond::json_value(200, &body);
                    respond::set_header(&mut response, "apim-request-id", &result_id);
                    response
                }
                _ => error(
                    404,
                    "NotFound",
                    "Resource not found.",
                    Some((
                        "AnalyzeResultNotFound",
                        "The requested analyze result was not found.",
                    )),
                ),
            }
        }
    }
}

fn analyze(
    service: &Service,
    req: &Req<'_>,
    base: &str,
    prefix: &str,
    model_id: &str,
    api_version: &str,
) -> Response {
    if !MODELS.iter().any(|(m, _)| *m == model_id) {
        return model_not_found(model_id);
    }
    let content_type = req
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let source_len = if content_type.starts_with("application/json") {
        match req.json() {
            Some(body) if body["urlSource"].is_string() => {
                body["urlSource"].as_str().map_or(0, str::len)
            }
            Some(body) if body["base64Source"].is_string() => {
                body["base64Source"].as_str().map_or(0, str::len) * 3 / 4
            }
            _ => 0,
        }
    } else {
        req.body.len()
    };
    if source_len == 0 {
        return error(
            400,
            "InvalidRequest",
            "Invalid request.",
            Some((
                "InvalidContent",
                "The file is corrupted or format is unsupported. Refer to documentation for the list of supported formats.",
            )),
        );
    }
    let result_id = uuid::Uuid::new_v4().to_string();
    let created = "2025-01-01T00:00:00Z";
    let content = format!("Emulated {model_id} result for a {source_len}-byte document.");
    let mut document_fields = json!({});
    if service.options.foreign_links {
        let url = blob_sas_url("analyze", &format!("{result_id}.json"));
        document_fields =
            json!({"SourceUrl": {"type": "string", "valueString": url, "content": url}});
    }
    let analyze_result = json!({
        "apiVersion": api_version,
        "modelId": model_id,
        "stringIndexType": "textElements",
        "content": content,
        "pages": [{
            "pageNumber": 1,
            "angle": 0,
            "width": 8.5,
            "height": 11,
            "unit": "inch",
            "words": [],
            "lines": [{"content": content, "polygon": [1, 1, 7, 1, 7, 1.2, 1, 1.2], "spans": [{"offset": 0, "length": content.len()}]}],
            "spans": [{"offset": 0, "length": content.len()}]
        }],
        "paragraphs": [{"content": content, "spans": [{"offset": 0, "length": content.len()}]}],
        "styles": [],
        "contentFormat": "text",
        "documents": [{"docType": model_id, "confidence": 0.99, "spans": [{"offset": 0, "length": content.len()}], "fields": document_fields}],
    });
    let running =
        json!({"status": "running", "createdDateTime": created, "lastUpdatedDateTime": created});
    let done = json!({
        "status": "succeeded",
        "createdDateTime": created,
        "lastUpdatedDateTime": created,
        "analyzeResult": analyze_result,
    });
    service.start_operation(&format!("di-{model_id}/{result_id}"), running, done);
    let host_base = if service.options.foreign_links {
        format!("https://{FOREIGN_HOST}")
    } else {
        base.to_owned()
    };
    let location = format!(
        "{host_base}/{prefix}/documentModels/{model_id}/analyzeResults/{result_id}?api-version={api_version}"
    );
    let mut response = axum::response::IntoResponse::into_response(http::StatusCode::ACCEPTED);
    respond::set_header(&mut response, "operation-location", &location);
    respond::set_header(&mut response, "apim-request-id", &result_id);
    response
}

fn list_models(
    service: &Service,
    base: &str,
    prefix: &str,
    api_version: &str,
    req: &Req<'_>,
) -> Response {
    let skip = req
        .query("skip")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let size = service.options.page_size;
    let value: Vec<Value> = MODELS
        .iter()
        .skip(skip)
        .take(size)
        .map(|(id, description)| model(service, id, description, api_version))
        .collect();
    let mut body = json!({ "value": value });
    if skip + size < MODELS.len() {
        body["nextLink"] = json!(format!(
            "{base}/{prefix}/documentModels?api-version={api_version}&skip={}",
            skip + size
        ));
    }
    respond::json_value(200, &body)
}

fn model(service: &Service, id: &str, description: &str, api_version: &str) -> Value {
    let mut m = json!({
        "modelId": id,
        "description": description,
        "createdDateTime": "2024-11-30T00:00:00Z",
        "apiVersion": api_version,
        "tags": {},
    });
    if service.options.foreign_links {
        m["azureBlobSource"] = json!({"containerUrl": blob_sas_url("training", id)});
    }
    m
}

fn model_not_found(id: &str) -> Response {
    error(
        404,
        "NotFound",
        "Resource not found.",
        Some((
            "ModelNotFound",
            &format!("The requested model '{id}' was not found."),
        )),
    )
}

/// Document Intelligence's error body, with an inner error when given.
fn error(status: u16, code: &str, message: &str, inner: Option<(&str, &str)>) -> Response {
    let mut body = json!({"error": {"code": code, "message": message}});
    if let Some((code, message)) = inner {
        body["error"]["innererror"] = json!({"code": code, "message": message});
    }
    respond::json_value(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn routes_follow_the_2024_11_30_shapes() {
        assert_eq!(
            Route::parse(&Method::POST, &["documentModels", "prebuilt-read:analyze"]),
            Route::Analyze("prebuilt-read".into())
        );
        assert_eq!(
            Route::parse(&Method::POST, &["documentModels", ":analyze"]),
            Route::NotFound
        );
        assert_eq!(
            Route::parse(
                &Method::GET,
                &["documentModels", "m", "analyzeResults", "r"]
            ),
            Route::Result("m".into(), "r".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, &["documentModels"]),
            Route::ListModels
        );
        assert_eq!(
            Route::parse(&Method::GET, &["documentModels", "m"]),
            Route::GetModel("m".into())
        );
        assert_eq!(
            Route::parse(&Method::DELETE, &["documentModels", "m"]),
            Route::NotFound
        );
    }
}
