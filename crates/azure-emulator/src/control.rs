//! The control API under `/emulator/`, for tests and benchmarks that run the emulator as a process.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Ctx;
use super::faults::{Fault, IdentityFault};
use super::keys::MintSpec;
use super::respond;
use super::samples::error_body;

/// A control request whose body did not parse, with the reason.
struct BadBody(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptRequest {
    deployment: String,
    faults: Vec<Fault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFaultRequest {
    fault: Option<IdentityFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppRequest {
    tenant_id: String,
    client_id: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserAssignedRequest {
    client_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceRequest {
    kind: crate::ResourceKind,
    #[serde(default)]
    options: crate::ServiceOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimeRequest {
    lifetime_secs: u64,
}

/// `GET /emulator/stats`, `GET|DELETE /emulator/requests`, `POST /emulator/mint`,
/// `POST /emulator/script`, `POST /emulator/identity-fault`, `POST /emulator/rotate-key`,
/// `POST /emulator/revoke`, `POST /emulator/token-lifetime`, `POST /emulator/apps`,
/// `POST /emulator/apps/{client_id}/expire-secret`, `POST /emulator/user-assigned`,
/// `POST /emulator/services` (`{"kind":"search","options":{…}}` → `{"url":…}`: another
/// listener playing that resource, see [`crate::Emulator::add_service`]).
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/emulator/stats", get(stats))
        .route("/emulator/requests", get(requests).delete(clear_requests))
        .route("/emulator/mint", post(mint))
        .route("/emulator/script", post(script))
        .route("/emulator/identity-fault", post(identity_fault))
        .route("/emulator/rotate-key", post(rotate_key))
        .route("/emulator/revoke", post(revoke))
        .route("/emulator/token-lifetime", post(token_lifetime))
        .route("/emulator/apps", post(register_app))
        .route(
            "/emulator/apps/{client_id}/expire-secret",
            post(expire_secret),
        )
        .route("/emulator/user-assigned", post(user_assigned))
        .route("/emulator/services", post(add_service))
}

async fn add_service(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req = match parse::<ServiceRequest>(&body, "/emulator/services") {
        Ok(req) => req,
        Err(bad) => return bad.into_response(),
    };
    let ip = ctx
        .shared
        .listen_ip
        .get()
        .copied()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    match crate::spawn_resource(&ctx.shared, ip, req.kind, req.options).await {
        Ok(url) => json_of(&serde_json::json!({ "url": url.as_str() })),
        Err(e) => respond::json(
            500,
            error_body("500", &format!("cannot open a listener: {e}")),
        ),
    }
}

async fn stats(State(ctx): State<Ctx>) -> Response {
    json_of(&ctx.shared.stats())
}

async fn requests(State(ctx): State<Ctx>) -> Response {
    json_of(&ctx.shared.requests())
}

async fn clear_requests(State(ctx): State<Ctx>) -> Response {
    ctx.shared.clear_requests();
    StatusCode::NO_CONTENT.into_response()
}

async fn mint(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match parse::<MintSpec>(&body, "/emulator/mint") {
        Ok(spec) => json_of(&serde_json::json!({ "access_token": ctx.shared.mint(&spec) })),
        Err(bad) => bad.into_response(),
    }
}

async fn script(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match parse::<ScriptRequest>(&body, "/emulator/script") {
        Ok(req) => {
            ctx.shared.script(&req.deployment, req.faults);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

async fn identity_fault(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match parse::<IdentityFaultRequest>(&body, "/emulator/identity-fault") {
        Ok(req) => {
            ctx.shared.set_identity_fault(req.fault);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

async fn rotate_key(State(ctx): State<Ctx>) -> Response {
    let shared = std::sync::Arc::clone(&ctx.shared);
    // Key generation takes a while: keep it off the async workers.
    match tokio::task::spawn_blocking(move || shared.rotate_signing_key()).await {
        Ok(kid) => json_of(&serde_json::json!({ "kid": kid })),
        Err(_) => respond::json(500, error_body("500", "key rotation failed")),
    }
}

async fn revoke(State(ctx): State<Ctx>) -> Response {
    ctx.shared.revoke_issued_tokens();
    StatusCode::NO_CONTENT.into_response()
}

async fn token_lifetime(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match parse::<LifetimeRequest>(&body, "/emulator/token-lifetime") {
        Ok(req) => {
            ctx.shared
                .set_token_lifetime(Duration::from_secs(req.lifetime_secs));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

async fn register_app(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match parse::<AppRequest>(&body, "/emulator/apps") {
        Ok(req) => {
            ctx.shared
                .register_app(&req.tenant_id, &req.client_id, &req.secret);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

async fn expire_secret(State(ctx): State<Ctx>, Path(client_id): Path<String>) -> Response {
    if ctx.shared.app(&client_id).is_none() {
        return respond::json(
            404,
            error_body("404", &format!("no app '{client_id}' is registered")),
        );
    }
    ctx.shared.expire_app_secret(&client_id);
    StatusCode::NO_CONTENT.into_response()
}

async fn user_assigned(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match parse::<UserAssignedRequest>(&body, "/emulator/user-assigned") {
        Ok(req) => {
            ctx.shared.register_user_assigned(&req.client_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(bad) => bad.into_response(),
    }
}

/// Parses a JSON body; a bad one is a 400 that says what is wrong and where.
fn parse<T: DeserializeOwned>(body: &[u8], route: &str) -> Result<T, BadBody> {
    serde_json::from_slice(body).map_err(|e| BadBody(format!("invalid JSON body for {route}: {e}")))
}

impl axum::response::IntoResponse for BadBody {
    fn into_response(self) -> Response {
        respond::json(400, error_body("BadRequest", &self.0))
    }
}

fn json_of<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => respond::json(200, body),
        Err(e) => respond::json(500, error_body("500", &e.to_string())),
    }
}
