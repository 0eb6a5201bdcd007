//! Entra-token and client-credential callers over a realtime WebSocket, as on HTTP: the
//! caller's credential is checked at the handshake and never reaches Azure, which sees the
//! proxy's (or the caller's app's) bearer for the backend's audience; and each key's model
//! list, expiry and budgets apply at the handshake, before Azure is called.

use crate::common::*;
use azure_emulator::{Emulator, MintSpec};
use entra_proxy::claims::decode_unverified;
use entra_proxy::config::KeyDigest;
use futures_util::StreamExt as _;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const PROXY_AUD: &str = "api://entra-proxy";
const REALTIME: &str = "/openai/v1/realtime?model=gpt-4o";

/// Opens a WebSocket to `path_and_query` with `headers`; `Err` carries a refused handshake.
pub(crate) async fn ws_connect(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, http::Response<Option<Vec<u8>>>> {
    let mut req = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the handshake answers")
    {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(refused)) => Err(*refused),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// The next frame, within a few seconds.
pub(crate) async fn ws_next(socket: &mut Socket) -> Message {
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a frame in time")
        .expect("the socket is open")
        .expect("a valid frame")
}

/// Status, error code and message of a refused handshake.
pub(crate) fn refusal(r: &http::Response<Option<Vec<u8>>>) -> (u16, String, String) {
    let body: serde_json::Value =
        serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap_or_default();
    (
        r.status().as_u16(),
        body["error"]["code"].as_str().unwrap_or_default().into(),
        body["error"]["message"].as_str().unwrap_or_default().into(),
    )
}

/// Opens a realtime session and reads its `session.created`.
async fn session(h: &Harness, headers: &[(&str, &str)]) -> Socket {
    let mut ws = ws_connect(h.addr, REALTIME, headers)
        .await
        .unwrap_or_else(|r| panic!("refused: {:?}", refusal(&r)));
    match ws_next(&mut ws).await {
        Message::Text(t) => assert!(t.as_str().contains("session.created"), "{t}"),
        other => panic!("expected session.created, got {other:?}"),
    }
    ws
}

/// Asserts the upstream handshake carried none of `secrets` anywhere.
fn assert_never_seen(seen: &azure_emulator::SeenRequest, secrets: &[&str]) {
    for secret in secrets {
        assert!(!seen.path_and_query.contains(secret), "{seen:?}");
        for (name, value) in &seen.headers {
            assert!(!value.contains(secret), "{name} carried a caller secret");
        }
    }
    assert!(seen.header("api-key").is_none());
}

fn bearer_claims(seen: &azure_emulator::SeenRequest) -> entra_proxy::claims::Claims {
    let token = seen
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ");
    decode_unverified(token).unwrap().claims
}

async fn entra_harness() -> Harness {
    let emu = emulator().await;
    let text = format!(
        "{}\n[inbound.entra]\ntenants = [\"{}\"]\naudiences = [\"{PROXY_AUD}\"]\n",
        base_config(&emu.url()),
        emu.config().tenant_id
    );
    proxy(emu, &text).await
}

#[tokio::test]
async fn an_entra_token_for_the_proxy_opens_a_socket_with_the_proxys_own_bearer() {
    let h = entra_harness().await;
    let mut spec = MintSpec::new(PROXY_AUD);
    spec.appid = Some("caller-app".into());
    let token = h.emulator.mint(&spec);
    let auth = format!("Bearer {token}");
    let mut ws = session(&h, &[("authorization", &auth)]).await;
    ws.send_text_and_echo("hello").await;
    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    assert_eq!(
        bearer_claims(&seen[0]).app_id(),
        Some(h.emulator.config().managed_identity_client_id.as_str()),
        "the proxy's identity, not the caller's"
    );
    assert_never_seen(&seen[0], &[&token]);
    h.stop().await;
}

#[tokio::test]
async fn an_entra_token_for_the_resource_is_passed_through_to_the_socket_as_is() {
    let h = entra_harness().await;
    let token = h.emulator.mint(&MintSpec::new(COGNITIVE_AUD));
    let auth = format!("Bearer {token}");
    let mut ws = session(&h, &[("authorization", &auth)]).await;
    ws.send_text_and_echo("hello").await;
    let seen = h.emulator.requests();
    assert_eq!(seen[0].header("authorization"), Some(auth.as_str()));
    h.stop().await;
}

#[tokio::test]
async fn bad_entra_tokens_are_refused_at_the_handshake_naming_the_problem() {
    let h = entra_harness().await;
    let management = h
        .emulator
        .mint(&MintSpec::new("https://management.azure.com"));
    let mut expired = MintSpec::new(PROXY_AUD);
    expired.lifetime_secs = -3600;
    let expired = h.emulator.mint(&expired);
    for (token, code, needle) in [
        (
            management,
            "token_wrong_audience",
            "https://management.azure.com",
        ),
        (expired, "token_expired", "token expired at"),
    ] {
        let auth = format!("Bearer {token}");
        let refused = ws_connect(h.addr, REALTIME, &[("authorization", &auth)])
            .await
            .expect_err("refused");
        let (status, got, message) = refusal(&refused);
        assert_eq!((status, got.as_str()), (401, code), "{message}");
        assert!(message.contains(needle), "{message}");
        assert!(!message.contains(&token));
    }
    assert_eq!(h.emulator.stats().data_requests, 0, "Azure never called");
    h.stop().await;
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn client_credentials_harness() -> Harness {
    let emu = emulator().await;
    let tenant = emu.config().tenant_id.clone();
    emu.register_app(&tenant, "app-one", "secret-one-value");
    let text = format!(
        "{}\n[inbound.client_credentials]\ntenant_id = \"{tenant}\"\n",
        base_config(&emu.url())
    );
    proxy(emu, &text).await
}

#[tokio::test]
async fn client_credentials_open_a_socket_with_that_apps_own_token() {
    let h = client_credentials_harness().await;
    let auth = basic("app-one", "secret-one-value");
    let mut ws = session(&h, &[("authorization", &auth)]).await;
    ws.send_text_and_echo("hello").await;
    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    assert_eq!(bearer_claims(&seen[0]).app_id(), Some("app-one"));
    assert_never_seen(&seen[0], &["secret-one-value", &auth]);
    h.stop().await;
}

#[tokio::test]
async fn wrong_client_credentials_are_refused_at_the_handshake() {
    let h = client_credentials_harness().await;
    let refused = ws_connect(
        h.addr,
        REALTIME,
        &[("authorization", &basic("app-one", "wrong-secret"))],
    )
    .await
    .expect_err("refused");
    let (status, code, message) = refusal(&refused);
    assert_eq!((status, code.as_str()), (401, "invalid_client_credentials"));
    assert!(message.contains("AADSTS7000215"), "{message}");
    assert!(!message.contains("wrong-secret"));
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

/// The base config with keys `embed-only` (models = ["embed"]), `expired` and `one-a-minute`
/// (requests_per_minute = 1); each key is `<name>-key`.
fn policy_config(emu: &Emulator) -> String {
    let key = |name: &str, extra: &str| {
        format!(
            "\n[[keys]]\nname = \"{name}\"\nsha256 = \"{}\"\n{extra}\n",
            KeyDigest::of(&format!("{name}-key")).to_hex()
        )
    };
    format!(
        "{}{}{}{}",
        base_config(&emu.url()),
        key("embed-only", "models = [\"embed\"]"),
        key("expired", "expires = \"2020-01-01T00:00:00Z\""),
        key("one-a-minute", "requests_per_minute = 1"),
    )
}

#[tokio::test]
async fn each_keys_models_expiry_and_rate_apply_at_the_handshake() {
    let emu = emulator().await;
    let text = policy_config(&emu);
    let h = proxy(emu, &text).await;

    let refused = ws_connect(h.addr, REALTIME, &[("api-key", "embed-only-key")])
        .await
        .expect_err("a model the key may not use");
    let (status, code, message) = refusal(&refused);
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    assert!(
        message.contains("gpt-4o") && message.contains("allowed: embed"),
        "{message}"
    );

    let refused = ws_connect(h.addr, &format!("{REALTIME}&api-key=expired-key"), &[])
        .await
        .expect_err("an expired key");
    let (status, code, message) = refusal(&refused);
    assert_eq!((status, code.as_str()), (401, "key_expired"));
    assert!(
        message.contains("expired at 2020-01-01T00:00:00Z"),
        "{message}"
    );

    let mut first = session(&h, &[("api-key", "one-a-minute-key")]).await;
    let refused = ws_connect(h.addr, REALTIME, &[("api-key", "one-a-minute-key")])
        .await
        .expect_err("over requests_per_minute");
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The open socket is not affected by the refusal of the next one.
    first.send_text_and_echo("still open").await;
    assert_eq!(
        h.emulator.stats().data_requests,
        1,
        "only the admitted handshake reached Azure"
    );
    h.stop().await;
}

/// Sends a text event and reads its echo.
trait Echo {
    async fn send_text_and_echo(&mut self, text: &str);
}

impl Echo for Socket {
    async fn send_text_and_echo(&mut self, text: &str) {
        use futures_util::SinkExt as _;
        let event = format!(r#"{{"type":"conversation.item.create","text":"{text}"}}"#);
        self.send(Message::text(event.clone())).await.unwrap();
        assert_eq!(ws_next(self).await, Message::text(event));
    }
}
