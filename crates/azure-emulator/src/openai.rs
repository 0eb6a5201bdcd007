//! The Azure OpenAI data plane: routes, request checks in Azure's order, answers and streams.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Uri};
use serde_json::Value;

use super::Ctx;
use super::auth::{self, Accepted};
use super::conn::Connection;
use super::faults::{self, Applied, Garble};
use super::replies::{self, Reply};
use super::respond;
use super::samples::{
    AzureSample, Operation, SampleContext, invalid_json_body, invalid_request_body,
};
use super::state::{SeenRequest, Shared};
use super::stream;

/// A data-plane request, classified by method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// `POST /openai/deployments/{d}/…?api-version=…`
    Deployment {
        deployment: String,
        op: Operation,
    },
    /// `POST /openai/v1/…`: the deployment is the body's `model`.
    V1 {
        op: Operation,
    },
    /// `POST /openai/responses?api-version=…`: the deployment is the body's `model`.
    Responses,
    /// `GET /openai/deployments?api-version=…`
    ListDeployments,
    /// `GET /openai/v1/models`
    ListModels,
    NotFound,
}

/// Why a body cannot be served.
enum BodyError {
    NotJson,
    Invalid(String, Option<&'static str>, Option<&'static str>),
}

impl Route {
    fn parse(method: &Method, path: &str) -> Route {
        let path = path.trim_end_matches('/');
        let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let post = method == Method::POST;
        let get = method == Method::GET;
        match s.as_slice() {
            ["openai", "deployments"] if get => Route::ListDeployments,
            ["openai", "deployments", d, rest @ ..] if post && !d.is_empty() => {
                match deployment_op(rest) {
                    Some(op) => Route::Deployment {
                        deployment: (*d).to_owned(),
                        op,
                    },
                    None => Route::NotFound,
                }
            }
            ["openai", "v1", "models"] if get => Route::ListModels,
            ["openai", "v1", "responses"] if post => Route::V1 {
                op: Operation::Responses,
            },
            ["openai", "v1", rest @ ..] if post => match deployment_op(rest) {
                Some(op) => Route::V1 { op },
                None => Route::NotFound,
            },
            ["openai", "responses"] if post => Route::Responses,
            _ => Route::NotFound,
        }
    }

    fn operation(&self) -> Operation {
        match self {
            Route::Deployment { op, .. } | Route::V1 { op } => *op,
            Route::Responses => Operation::Responses,
            Route::ListDeployments | Route::ListModels | Route::NotFound => Operation::Chat,
        }
    }
}

fn deployment_op(rest: &[&str]) -> Option<Operation> {
    match rest {
        ["chat", "completions"] => Some(Operation::Chat),
        ["completions"] => Some(Operation::Completions),
        ["embeddings"] => Some(Operation::Embeddings),
        _ => None,
    }
}

/// The data plane: the fallback handler of every listener.
pub(crate) async fn handle(
    State(ctx): State<Ctx>,
    conn: Option<Extension<Connection>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &ctx.shared;
    shared.count_data_request();
    let seq = shared.record(SeenRequest::from_parts(&method, &uri, &headers, &body));
    let conn = conn.map(|Extension(c)| c);
    let request = Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        seq,
        conn: conn.as_ref(),
    };
    let (response, accepted) = answer(&ctx, request).await;
    let response = finish(response, accepted.as_ref());
    shared.set_status(seq, response.status().as_u16());
    response
}

/// One data-plane request as [`answer`] reads it.
struct Incoming<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    body: &'a [u8],
    /// Its number in the request log.
    seq: u64,
    conn: Option<&'a Connection>,
}

async fn answer(ctx: &Ctx, request: Incoming<'_>) -> (Response, Option<Accepted>) {
    let Incoming {
        method,
        uri,
        headers,
        body,
        seq,
        conn,
    } = request;
    let shared = &ctx.shared;
    let route = Route::parse(method, uri.path());
    let api_version = query_param(uri, "api-version");
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let model = json
        .as_ref()
        .and_then(|j| j["model"].as_str())
        .map(str::to_owned);
    let deployment = match &route {
        Route::Deployment { deployment, .. } => Some(deployment.clone()),
        Route::V1 { .. } | Route::Responses => model.clone(),
        Route::ListDeployments | Route::ListModels | Route::NotFound => None,
    };
    let sample_ctx = sample_context(ctx, &route, headers, api_version.as_deref());

    let fault = deployment
        .as_deref()
        .and_then(|d| faults::pop_for(shared, d, conn));
    if !shared.sleep(shared.config.latency).await {
        return (respond::shutting_down(), None);
    }
    let shaping = match faults::apply(shared, fault, &sample_ctx).await {
        Applied::Answer(response) => return (response, None),
        Applied::Cut | Applied::CutIfReused => return (faults::cut(shared, conn).await, None),
        Applied::Proceed {
            reset_after,
            garble,
        } => Shaping {
            reset_after,
            garble,
        },
    };
    let accepted = match auth::authenticate_with_key(
        shared,
        ctx.kind,
        ctx.service.options.key.as_deref(),
        headers,
        seq,
    ) {
        Ok(accepted) => accepted,
        Err(sample) => return (respond::sample(sample, &sample_ctx), None),
    };
    let azure_error = |sample: AzureSample| respond::sample(sample, &sample_ctx);
    let response = match route {
        Route::NotFound => azure_error(AzureSample::ResourceNotFound404),
        Route::ListDeployments => match check_api_version(api_version.as_deref()) {
            Err(sample) => azure_error(sample),
            Ok(()) => {
                respond::json_value(200, &replies::deployments_list(&shared.config.deployments))
            }
        },
        Route::ListModels => {
            respond::json_value(200, &replies::models_list(&shared.config.deployments))
        }
        Route::Deployment { deployment, op } => {
            if let Err(sample) = check_api_version(api_version.as_deref()) {
                return (azure_error(sample), Some(accepted));
            }
            if !shared.config.deployments.contains(&deployment) {
                return (
                    azure_error(AzureSample::DeploymentNotFound404),
                    Some(accepted),
                );
            }
            serve(shared, op, &deployment, json.as_ref(), shaping)
        }
        Route::V1 { op } => serve_by_model(
            shared,
            op,
            model.as_deref(),
            json.as_ref(),
            shaping,
            &sample_ctx,
        ),
        Route::Responses => match check_api_version(api_version.as_deref()) {
            Err(sample) => azure_error(sample),
            Ok(()) => serve_by_model(
                shared,
                Operation::Responses,
                model.as_deref(),
                json.as_ref(),
                shaping,
                &sample_ctx,
            ),
        },
    };
    (response, Some(accepted))
}

/// `api-version` missing → 404 Resource not found; malformed → 400 API version not supported.
fn check_api_version(api_version: Option<&str>) -> Result<(), AzureSample> {
    match api_version {
        None => Err(AzureSample::ResourceNotFound404),
        Some(v) if valid_api_version(v) => Ok(()),
        Some(_) => Err(AzureSample::ApiVersionUnsupported400),
    }
}

/// `^\d{4}-\d{2}-\d{2}(-preview)?$`
fn valid_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let b = date.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn serve_by_model(
    shared: &Arc<Shared>,
    op: Operation,
    model: Option<&str>,
    json: Option<&Value>,
    shaping: Shaping,
    sample_ctx: &SampleContext,
) -> Response {
    let Some(json) = json else {
        return respond::json(400, invalid_json_body());
    };
    let Some(model) = model else {
        return respond::json(
            400,
            invalid_request_body("you must provide a model parameter", None, None),
        );
    };
    if !shared.config.deployments.iter().any(|d| d == model) {
        return respond::sample(AzureSample::DeploymentNotFound404, sample_ctx);
    }
    serve(shared, op, model, Some(json), shaping)
}

/// How a scripted fault shapes a successful answer.
#[derive(Debug, Clone, Copy, Default)]
struct Shaping {
    /// Break the body after this many events.
    reset_after: Option<usize>,
    /// Garble the part that carries the usage.
    garble: Option<Garble>,
}

/// Answers a well-formed request for a known deployment.
fn serve(
    shared: &Arc<Shared>,
    op: Operation,
    deployment: &str,
    json: Option<&Value>,
    shaping: Shaping,
) -> Response {
    let Shaping {
        reset_after,
        garble,
    } = shaping;
    let stable = shared.config.stable_ids;
    let request = match check_body(op, json) {
        Ok(request) => request,
        Err(BodyError::NotJson) => return respond::json(400, invalid_json_body()),
        Err(BodyError::Invalid(message, param, code)) => {
            return respond::json(400, invalid_request_body(&message, param, code));
        }
    };
    let streamed = request["stream"] == true && op != Operation::Embeddings;
    let n = shared.config.stream_events;
    if streamed {
        let include_usage = request["stream_options"]["include_usage"] == true;
        let mut events = match op {
            Operation::Chat => {
                let reply =
                    Reply::new(deployment, &replies::chat_prompt(request)).with_stable_ids(stable);
                replies::chat_events(deployment, &reply, n, include_usage)
            }
            Operation::Completions => {
                let reply = Reply::new(deployment, &replies::completion_prompt(request))
                    .with_stable_ids(stable);
                replies::completion_events(deployment, &reply, n, include_usage)
            }
            Operation::Responses | Operation::Embeddings => {
                let reply = Reply::new(deployment, &replies::responses_prompt(request));
                replies::response_events(deployment, &reply, n)
            }
        };
        if let Some(garble) = garble {
            faults::garble_events(&mut events, garble);
        }
        let body = stream::sse_body(
            Arc::clone(shared),
            events,
            shared.config.stream_interval,
            reset_after,
        );
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    }
    let value = match op {
        Operation::Chat => replies::chat_completion(
            deployment,
            &Reply::new(deployment, &replies::chat_prompt(request)).with_stable_ids(stable),
        ),
        Operation::Completions => replies::completion(
            deployment,
            &Reply::new(deployment, &replies::completion_prompt(request)).with_stable_ids(stable),
        ),
        Operation::Embeddings => match replies::embeddings(deployment, request) {
            Ok(value) => value,
            Err(message) => {
                return respond::json(400, invalid_request_body(&message, Some("input"), None));
            }
        },
        Operation::Responses => replies::response(
            deployment,
            &Reply::new(deployment, &replies::responses_prompt(request)),
        ),
    };
    let mut response = match garble {
        Some(garble) => respond::json(200, faults::garble_json(value, garble)),
        None => respond::json_value(200, &value),
    };
    if reset_after.is_some() {
        *response.body_mut() = respond::broken_body();
    }
    response
}

/// The request body as a JSON object with what the operation needs.
fn check_body(op: Operation, json: Option<&Value>) -> Result<&Value, BodyError> {
    let request = json.filter(|j| j.is_object()).ok_or(BodyError::NotJson)?;
    let missing = |param: &'static str| {
        Err(BodyError::Invalid(
            format!("Missing required parameter: '{param}'."),
            Some(param),
            Some("missing_required_parameter"),
        ))
    };
    match op {
        Operation::Chat if !request["messages"].is_array() => missing("messages"),
        Operation::Completions if request["prompt"].is_null() => missing("prompt"),
        Operation::Responses if request["input"].is_null() => missing("input"),
        Operation::Chat | Operation::Completions | Operation::Responses | Operation::Embeddings => {
            Ok(request)
        }
    }
}

/// What the error samples of this request would mention.
fn sample_context(
    ctx: &Ctx,
    route: &Route,
    headers: &HeaderMap,
    api_version: Option<&str>,
) -> SampleContext {
    let mut sc = SampleContext::for_operation(
        ctx.kind.audience(ctx.shared.config.cloud),
        route.operation(),
    );
    if let Some(v) = api_version {
        sc.api_version = v.to_owned();
    } else if matches!(route, Route::V1 { .. }) {
        "v1".clone_into(&mut sc.api_version);
    }
    if let Some(oid) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(super::state::bearer_token)
        .and_then(|t| crate::jwt::claims_unverified(t).ok())
        .and_then(|claims| claims.oid)
    {
        sc.principal_id = oid;
    }
    sc
}

/// Azure's response headers on every data-plane answer, plus the accepted audience.
fn finish(mut response: Response, accepted: Option<&Accepted>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    respond::set_header(&mut response, "apim-request-id", &request_id);
    respond::set_header(&mut response, "x-request-id", &request_id);
    respond::set_header(&mut response, "x-ms-region", "Emulator");
    if let Some(aud) = accepted.and_then(|a| a.audience.as_deref()) {
        respond::set_header(&mut response, "x-emulator-audience", aud);
    }
    response
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Decodes `%XX` escapes; leaves malformed ones as they are.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_like_azure() {
        let p = |m: Method, path: &str| Route::parse(&m, path);
        assert_eq!(
            p(Method::POST, "/openai/deployments/gpt-4o/chat/completions"),
            Route::Deployment {
                deployment: "gpt-4o".into(),
                op: Operation::Chat
            }
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments/my%20dep/embeddings/"),
            Route::Deployment {
                deployment: "my dep".into(),
                op: Operation::Embeddings
            }
        );
        assert_eq!(
            p(Method::POST, "/openai/v1/responses"),
            Route::V1 {
                op: Operation::Responses
            }
        );
        assert_eq!(
            p(Method::GET, "/openai/deployments"),
            Route::ListDeployments
        );
        assert_eq!(p(Method::GET, "/openai/v1/models"), Route::ListModels);
        assert_eq!(
            p(Method::GET, "/openai/deployments/x/chat/completions"),
            Route::NotFound
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments//completions"),
            Route::NotFound
        );
        assert_eq!(
            p(Method::POST, "/openai/deployments/x/images/generations"),
            Route::NotFound
        );
        assert_eq!(p(Method::POST, "/"), Route::NotFound);
    }

    #[test]
    fn api_versions_follow_azures_pattern() {
        assert!(valid_api_version("2024-10-21"));
        assert!(valid_api_version("2025-04-01-preview"));
        for bad in [
            "2024-1-21",
            "latest",
            "2024-10-21-beta",
            "",
            "2024/10/21",
            "２０２４-10-21",
        ] {
            assert!(!valid_api_version(bad), "{bad}");
        }
        assert_eq!(
            check_api_version(None),
            Err(AzureSample::ResourceNotFound404)
        );
        assert_eq!(
            check_api_version(Some("v1")),
            Err(AzureSample::ApiVersionUnsupported400)
        );
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
