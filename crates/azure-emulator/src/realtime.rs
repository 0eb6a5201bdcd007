//! The realtime API over WebSocket, both Azure shapes: `GET /openai/realtime?api-version=…&
//! deployment=…` and the GA `GET /openai/v1/realtime?model=…`. The bearer token (or key) is
//! checked like the HTTP data plane and refused with Azure's 401 body before any upgrade. A
//! session answers `session.created`, echoes events (text as text, binary as binary), answers
//! `response.create` with `response.done` carrying `response.usage`, closes on
//! `{"type":"emulator.close","code":…,"reason":…}`, and echoes the client's close code and
//! reason.
//!
//! The ephemeral-key endpoints browsers get their keys from: the GA
//! `POST /openai/v1/realtime/client_secrets` and the preview
//! `POST /openai/realtimeapi/sessions?api-version=…`, checked like any data-plane POST.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use super::Ctx;
use super::auth;
use super::keys::now_unix;
use super::replies::Reply;
use super::respond;
use super::samples::{AzureSample, Operation, SampleContext, invalid_json_body};
use super::state::SeenRequest;

/// How long an ephemeral key lives, as Azure's default.
const EPHEMERAL_KEY_SECS: i64 = 600;

/// `GET /openai/realtime` and `GET /openai/v1/realtime`.
pub(crate) async fn handle(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let shared = &ctx.shared;
    shared.count_data_request();
    let seq = shared.record(SeenRequest::from_parts(&Method::GET, &uri, &headers, &[]));
    let response = answer(&ctx, &uri, &headers, upgrade, seq);
    shared.set_status(seq, response.status().as_u16());
    response
}

fn answer(
    ctx: &Ctx,
    uri: &Uri,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    seq: u64,
) -> Response {
    let shared = &ctx.shared;
    let sc =
        SampleContext::for_operation(ctx.kind.audience(shared.config.cloud), Operation::Responses);
    let param = |name: &str| {
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let v1 = uri.path().starts_with("/openai/v1/");
    if !v1 && param("api-version").is_none() {
        return respond::sample(AzureSample::ResourceNotFound404, &sc);
    }
    if let Err(sample) = auth::authenticate_with_key(
        shared,
        ctx.kind,
        ctx.service.options.key.as_deref(),
        headers,
        seq,
    ) {
        return respond::sample(sample, &sc);
    }
    let deployment = if v1 {
        param("model")
    } else {
        param("deployment")
    };
    let Some(deployment) = deployment.filter(|d| shared.config.deployments.contains(d)) else {
        return respond::sample(AzureSample::DeploymentNotFound404, &sc);
    };
    let Ok(upgrade) = upgrade else {
        return respond::json_value(
            400,
            &json!({"error": {"code": "BadRequest", "message": "Expected a WebSocket upgrade."}}),
        );
    };
    upgrade
        .protocols(["realtime", "openai-beta.realtime-v1"])
        .on_upgrade(move |socket| session(socket, deployment))
        .into_response()
}

/// Input tokens of what a session heard: a quarter of the bytes of the client's text events,
/// at least one per response.
fn input_tokens(heard_bytes: usize) -> u64 {
    u64::try_from(heard_bytes.div_ceil(4).max(1)).unwrap_or(u64::MAX)
}

/// `response.done` for one `response.create`, with its usage as Azure reports it.
fn response_done(deployment: &str, heard_bytes: usize) -> Value {
    let reply = Reply::new(deployment, "");
    let input = input_tokens(heard_bytes);
    let output = reply.completion_tokens;
    json!({
        "type": "response.done",
        "event_id": format!("event_{}", uuid::Uuid::new_v4().simple()),
        "response": {
            "id": format!("resp_{}", uuid::Uuid::new_v4().simple()),
            "object": "realtime.response",
            "status": "completed",
            "status_details": null,
            "output": [{
                "id": format!("item_{}", uuid::Uuid::new_v4().simple()),
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "text", "text": reply.text}],
            }],
            "usage": {
                "total_tokens": input + output,
                "input_tokens": input,
                "output_tokens": output,
                "input_token_details": {
                    "cached_tokens": 0,
                    "text_tokens": input,
                    "audio_tokens": 0,
                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0},
                },
                "output_token_details": {"text_tokens": output, "audio_tokens": 0},
            },
        },
    })
}

/// One realtime session.
async fn session(mut socket: WebSocket, deployment: String) {
    let created = json!({
        "type": "session.created",
        "event_id": format!("event_{}", uuid::Uuid::new_v4().simple()),
        "session": {"id": format!("sess_{}", uuid::Uuid::new_v4().simple()), "object": "realtime.session", "model": deployment},
    });
    if socket
        .send(Message::Text(created.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    // Bytes of the client's text events since the last response.
    let mut heard = 0usize;
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => match serde_json::from_str::<Value>(text.as_str()) {
                Ok(event) if event["type"] == "emulator.close" => {
                    let code = event["code"].as_u64().unwrap_or(1000) as u16;
                    let reason = event["reason"].as_str().unwrap_or_default().to_owned();
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    continue;
                }
                Ok(event) if event["type"] == "response.create" => {
                    let done = response_done(&deployment, std::mem::take(&mut heard));
                    Message::Text(done.to_string().into())
                }
                _ => {
                    heard += text.len();
                    Message::Text(text)
                }
            },
            Message::Binary(bytes) => Message::Binary(bytes),
            // Pings are answered by the protocol layer; pongs need nothing.
            Message::Ping(_) | Message::Pong(_) => continue,
            // The protocol layer echoes the client's code and reason.
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

/// `POST /openai/v1/realtime/client_secrets`: an ephemeral key for a GA realtime session
/// (`session.model` names the deployment).
pub(crate) async fn client_secret(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ephemeral(&ctx, &uri, &headers, &body, true)
}

/// `POST /openai/realtimeapi/sessions?api-version=…`: a preview realtime session with its
/// ephemeral `client_secret` (`model` names the deployment).
pub(crate) async fn preview_session(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ephemeral(&ctx, &uri, &headers, &body, false)
}

fn ephemeral(ctx: &Ctx, uri: &Uri, headers: &HeaderMap, body: &[u8], ga: bool) -> Response {
    let shared = &ctx.shared;
    shared.count_data_request();
    let seq = shared.record(SeenRequest::from_parts(&Method::POST, uri, headers, body));
    let response = ephemeral_answer(ctx, uri, headers, body, ga, seq);
    shared.set_status(seq, response.status().as_u16());
    response
}

fn ephemeral_answer(
    ctx: &Ctx,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    ga: bool,
    seq: u64,
) -> Response {
    let shared = &ctx.shared;
    let sc =
        SampleContext::for_operation(ctx.kind.audience(shared.config.cloud), Operation::Responses);
    let has_version = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, _)| k == "api-version");
    if !ga && !has_version {
        return respond::sample(AzureSample::ResourceNotFound404, &sc);
    }
    if let Err(sample) = auth::authenticate_with_key(
        shared,
        ctx.kind,
        ctx.service.options.key.as_deref(),
        headers,
        seq,
    ) {
        return respond::sample(sample, &sc);
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return respond::json(400, invalid_json_body());
    };
    let model = if ga {
        request["session"]["model"].as_str()
    } else {
        request["model"].as_str()
    };
    let Some(model) = model.filter(|m| shared.config.deployments.iter().any(|d| d == m)) else {
        return respond::sample(AzureSample::DeploymentNotFound404, &sc);
    };
    let expires_at = now_unix() + EPHEMERAL_KEY_SECS;
    let session_id = format!("sess_{}", uuid::Uuid::new_v4().simple());
    let secret = format!("ek_{}", uuid::Uuid::new_v4().simple());
    let answer = if ga {
        json!({
            "value": secret,
            "expires_at": expires_at,
            "session": {
                "type": "realtime",
                "object": "realtime.session",
                "id": session_id,
                "model": model,
                "output_modalities": ["audio"],
                "instructions": request["session"]["instructions"].as_str().unwrap_or_default(),
                "tools": [],
                "tool_choice": "auto",
                "max_output_tokens": "inf",
            },
        })
    } else {
        json!({
            "id": session_id,
            "object": "realtime.session",
            "model": model,
            "expires_at": expires_at,
            "modalities": ["audio", "text"],
            "voice": request["voice"].as_str().unwrap_or("alloy"),
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200},
            "tools": [],
            "tool_choice": "auto",
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
            "client_secret": {"value": secret, "expires_at": expires_at},
        })
    };
    respond::json_value(200, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_done_reports_what_the_session_heard() {
        let done = response_done("gpt-4o", 40);
        let usage = &done["response"]["usage"];
        assert_eq!(usage["input_tokens"], 10);
        let output = usage["output_tokens"].as_u64().unwrap();
        assert!(output > 0);
        assert_eq!(usage["total_tokens"], 10 + output);
        assert_eq!(usage["input_token_details"]["text_tokens"], 10);
        assert_eq!(
            response_done("gpt-4o", 0)["response"]["usage"]["input_tokens"],
            1
        );
    }
}
