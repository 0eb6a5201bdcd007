//! Speech over WebSocket on a resource's custom domain (`GET /speech/recognition/…`,
//! `GET /stt/speech/…`): the credential is checked like the rest of the data plane (a bearer
//! token for the resource's audience, or its key in `Ocp-Apim-Subscription-Key`) and refused
//! with Azure's 401 body before any upgrade; a session echoes what it gets (text as text,
//! binary as binary) and the client's close code and reason.

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, Method, Uri};
use serde_json::json;

use super::Ctx;
use super::auth;
use super::respond;
use super::samples::{Operation, SampleContext};
use super::state::SeenRequest;

/// `GET /speech/{…}` and `GET /stt/speech/{…}`.
pub(crate) async fn handle(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let shared = &ctx.shared;
    shared.count_data_request();
    let seq = shared.record(SeenRequest::from_parts(&Method::GET, &uri, &headers, &[]));
    let response = answer(&ctx, &headers, upgrade, seq);
    shared.set_status(seq, response.status().as_u16());
    response
}

fn answer(
    ctx: &Ctx,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    seq: u64,
) -> Response {
    let shared = &ctx.shared;
    if let Err(sample) = auth::authenticate_with_key(
        shared,
        ctx.kind,
        ctx.service.options.key.as_deref(),
        headers,
        seq,
    ) {
        let sc =
            SampleContext::for_operation(ctx.kind.audience(shared.config.cloud), Operation::Chat);
        return respond::sample(sample, &sc);
    }
    let Ok(upgrade) = upgrade else {
        return respond::json_value(
            400,
            &json!({"error": {"code": "BadRequest", "message": "Expected a WebSocket upgrade."}}),
        );
    };
    upgrade.on_upgrade(echo).into_response()
}

/// Echoes every message until the client closes (the protocol layer echoes its close).
pub(crate) async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}
