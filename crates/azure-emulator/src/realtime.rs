//! The realtime API over WebSocket, both Azure shapes: `GET /openai/realtime?api-version=…&
//! deployment=…` and the GA `GET /openai/v1/realtime?model=…`. The bearer token (or key) is
//! checked like the HTTP data plane and refused with Azure's 401 body before any upgrade. A
//! session answers `session.created`, echoes events (text as text, binary as binary), answers
//! `response.create` with `response.done`, closes on `{"type":"emulator.close","code":…,
//! "reason":…}`, and echoes the client's close code and reason.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use super::Ctx;
use super::auth;
use super::respond;
use super::samples::{AzureSample, Operation, SampleContext};
use super::state::SeenRequest;

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
    let response = answer(&ctx, &uri, &headers, upgrade);
    shared.set_status(seq, response.status().as_u16());
    response
}

fn answer(
    ctx: &Ctx,
    uri: &Uri,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
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
    if let Err(sample) = auth::authenticate(shared, ctx.kind, headers) {
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
                Ok(event) if event["type"] == "response.create" => Message::Text(
                    json!({
                        "type": "response.done",
                        "event_id": format!("event_{}", uuid::Uuid::new_v4().simple()),
                        "response": {"id": format!("resp_{}", uuid::Uuid::new_v4().simple()), "object": "realtime.response", "status": "completed", "output": []},
                    })
                    .to_string()
                    .into(),
                ),
                _ => Message::Text(text),
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
