//! Realtime over WebSocket through the swap: each Azure shape and OpenAI's `/v1/realtime`, each
//! way a client presents its key; frames and close codes relayed both ways; the idle timeout,
//! `max_websockets`, a refused handshake with its diagnosis, and keys kept out of Azure's sight
//! and out of the log; realtime usage metered from `response.done`; Speech sockets passed through
//! with the same swap; the ephemeral-key endpoints passed through like any POST.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The three realtime shapes: path and query naming gpt-4o.
const SHAPES: [(&str, &str); 3] = [
    (
        "/openai/realtime",
        "api-version=2024-10-01-preview&deployment=gpt-4o",
    ),
    ("/openai/v1/realtime", "model=gpt-4o"),
    ("/v1/realtime", "model=gpt-4o"),
];

/// How the client presents the key.
#[derive(Debug, Clone, Copy)]
enum Cred {
    ApiKeyHeader,
    Bearer,
    Query,
    Subprotocol,
}

async fn connect(
    addr: std::net::SocketAddr,
    path: &str,
    query: &str,
    cred: Cred,
) -> Result<(Socket, http::Response<Option<Vec<u8>>>), WsError> {
    let query = match cred {
        Cred::Query => format!("{query}&api-key={KEY}"),
        _ => query.to_string(),
    };
    let mut req = format!("ws://{addr}{path}?{query}")
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    match cred {
        Cred::ApiKeyHeader => {
            h.insert("api-key", KEY.parse().unwrap());
        }
        Cred::Bearer => {
            h.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        }
        Cred::Query => {}
        Cred::Subprotocol => {
            h.insert(
                "sec-websocket-protocol",
                format!("realtime, openai-insecure-api-key.{KEY}")
                    .parse()
                    .unwrap(),
            );
        }
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the handshake answers")
}

async fn next(socket: &mut Socket) -> Message {
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a frame in time")
        .expect("the socket is open")
        .expect("a valid frame")
}

fn json_of(m: &Message) -> serde_json::Value {
    match m {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Asserts Azure saw the proxy's token for the cognitive audience and no key anywhere.
fn assert_swapped(seen: &azure_emulator::SeenRequest) {
    assert_eq!(
        seen.bearer_audience.as_deref(),
        Some(COGNITIVE_AUD),
        "{seen:?}"
    );
    assert!(seen.header("api-key").is_none(), "{seen:?}");
    assert!(!seen.path_and_query.contains(KEY), "{seen:?}");
    assert!(!seen.path_and_query.contains("api-key"), "{seen:?}");
    for (name, value) in &seen.headers {
        assert!(!value.contains(KEY), "{name}: {value}");
        assert!(
            !value.contains("openai-insecure-api-key"),
            "{name}: {value}"
        );
    }
}

#[tokio::test]
async fn every_shape_and_credential_relays_frames_and_close_codes_with_a_swapped_token() {
    let h = start().await;
    for (path, query) in SHAPES {
        for cred in [
            Cred::ApiKeyHeader,
            Cred::Bearer,
            Cred::Query,
            Cred::Subprotocol,
        ] {
            let case = format!("{path}?{query} with {cred:?}");
            h.emulator.clear_requests();
            let (mut ws, response) = connect(h.addr, path, query, cred)
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            match cred {
                Cred::Subprotocol => assert_eq!(protocol.as_deref(), Some("realtime"), "{case}"),
                _ => assert_eq!(protocol, None, "{case}"),
            }
            let created = json_of(&next(&mut ws).await);
            assert_eq!(created["type"], "session.created", "{case}");
            assert_eq!(created["session"]["model"], "gpt-4o", "{case}");
            // In order, text as text and binary as binary.
            for i in 0..3 {
                let event = format!(r#"{{"type":"input_audio_buffer.append","n":{i}}}"#);
                ws.send(Message::text(event.clone())).await.unwrap();
                ws.send(Message::binary(vec![i, 0, 255])).await.unwrap();
                assert_eq!(next(&mut ws).await, Message::text(event), "{case}");
                assert_eq!(
                    next(&mut ws).await,
                    Message::binary(vec![i, 0, 255]),
                    "{case}"
                );
            }
            ws.send(Message::Ping(vec![7u8].into())).await.unwrap();
            assert_eq!(
                next(&mut ws).await,
                Message::Pong(vec![7u8].into()),
                "{case}"
            );
            ws.send(Message::Close(Some(CloseFrame {
                code: CloseCode::Library(4000),
                reason: "done".into(),
            })))
            .await
            .unwrap();
            match next(&mut ws).await {
                Message::Close(Some(f)) => {
                    assert_eq!(u16::from(f.code), 4000, "{case}");
                    assert_eq!(f.reason.as_str(), "done", "{case}");
                }
                other => panic!("{case}: expected a close, got {other:?}"),
            }
            let seen = h.emulator.requests();
            assert_eq!(seen.len(), 1, "{case}");
            assert_swapped(&seen[0]);
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn v1_realtime_on_the_deployment_api_names_the_deployment_and_a_realtime_api_version() {
    let h = start().await;
    let (mut ws, _) = connect(h.addr, "/v1/realtime", "model=gpt-4o", Cred::Bearer)
        .await
        .unwrap();
    assert_eq!(json_of(&next(&mut ws).await)["type"], "session.created");
    let seen = h.emulator.requests();
    assert_eq!(
        seen[0].path_and_query,
        format!(
            "/openai/realtime?deployment=gpt-4o&api-version={}",
            entra_proxy::routing::REALTIME_API_VERSION
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn azure_closing_reaches_the_client_with_its_code_and_reason() {
    let h = start().await;
    let (mut ws, _) = connect(h.addr, SHAPES[1].0, SHAPES[1].1, Cred::ApiKeyHeader)
        .await
        .unwrap();
    next(&mut ws).await;
    ws.send(Message::text(
        r#"{"type":"emulator.close","code":4001,"reason":"session expired"}"#,
    ))
    .await
    .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4001);
            assert_eq!(f.reason.as_str(), "session expired");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    h.stop().await;
}

fn with_server(emu: &azure_emulator::Emulator, settings: &str) -> String {
    base_config(&emu.url()).replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{settings}"),
    )
}

#[tokio::test]
async fn an_idle_socket_is_closed_with_1001_and_a_reason() {
    let emu = emulator().await;
    let text = with_server(&emu, "websocket_idle_timeout_secs = 0.3");
    let h = proxy(emu, &text).await;
    let (mut ws, _) = connect(h.addr, SHAPES[0].0, SHAPES[0].1, Cred::ApiKeyHeader)
        .await
        .unwrap();
    next(&mut ws).await;
    match next(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Away);
            assert_eq!(
                f.reason.as_str(),
                "idle timeout (server.websocket_idle_timeout_secs)"
            );
        }
        other => panic!("expected a close, got {other:?}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn sockets_over_max_websockets_are_refused_with_503() {
    let emu = emulator().await;
    let text = with_server(&emu, "max_websockets = 1");
    let h = proxy(emu, &text).await;
    let (mut first, _) = connect(h.addr, SHAPES[0].0, SHAPES[0].1, Cred::ApiKeyHeader)
        .await
        .unwrap();
    next(&mut first).await;
    let Err(WsError::Http(refused)) =
        connect(h.addr, SHAPES[0].0, SHAPES[0].1, Cred::ApiKeyHeader).await
    else {
        panic!("the second socket should be refused");
    };
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value =
        serde_json::from_slice(refused.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "too_many_websockets");
    assert_eq!(
        body["error"]["message"],
        "the proxy has 1 WebSockets open, its limit (server.max_websockets); retry later or raise the limit"
    );
    // Closing the first frees its place.
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(s) = connect(h.addr, SHAPES[0].0, SHAPES[0].1, Cred::ApiKeyHeader).await {
            reopened = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "a place is free again");
    h.stop().await;
}

#[tokio::test]
async fn a_refused_handshake_is_azures_answer_with_the_diagnosis() {
    let emu = emulator().await;
    // A backend whose token has the wrong audience for an Azure OpenAI resource.
    let text = base_config(&emu.url()).replace(
        "api_version = \"2024-10-21\"",
        "api_version = \"2024-10-21\"\nscope = \"https://ai.azure.com/.default\"",
    );
    let h = proxy(emu, &text).await;
    let Err(WsError::Http(refused)) =
        connect(h.addr, SHAPES[1].0, SHAPES[1].1, Cred::ApiKeyHeader).await
    else {
        panic!("Azure refuses the wrong audience");
    };
    assert_eq!(refused.status(), 401);
    let diagnosis = refused
        .headers()
        .get("x-entra-proxy-diagnosis")
        .expect("a diagnosis")
        .to_str()
        .unwrap()
        .to_string();
    assert!(diagnosis.contains("audience"), "{diagnosis}");
    let body = String::from_utf8(refused.body().clone().unwrap()).unwrap();
    assert!(body.contains("audience is incorrect"), "{body}");
    // An unknown deployment passes through to Azure's 404.
    let h2 = start().await;
    let Err(WsError::Http(missing)) = connect(
        h2.addr,
        "/openai/realtime",
        "api-version=2024-10-01-preview&deployment=nope",
        Cred::ApiKeyHeader,
    )
    .await
    else {
        panic!("Azure refuses an unknown deployment");
    };
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-entra-proxy-diagnosis"));
    h.stop().await;
    h2.stop().await;
}

#[tokio::test]
async fn unknown_keys_and_models_are_refused_before_azure_is_called() {
    let h = start().await;
    let mut req = format!("ws://{}/v1/realtime?model=gpt-4o&api-key=wrong", h.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().remove("api-key");
    let Err(WsError::Http(r)) = tokio_tungstenite::connect_async(req).await else {
        panic!("a wrong key is refused");
    };
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
    assert_eq!(
        body["error"]["message"],
        "the key in the api-key query parameter is not a key this proxy knows"
    );
    let Err(WsError::Http(r)) = connect(h.addr, "/v1/realtime", "model=gpt-9", Cred::Bearer).await
    else {
        panic!("an unknown model is refused");
    };
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
    assert_eq!(
        body["error"]["message"],
        "unknown model \"gpt-9\"; this proxy serves: gpt-4o, embed"
    );
    assert!(h.emulator.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn keys_in_query_strings_and_subprotocols_never_reach_the_log() {
    let emu = emulator().await;
    let (child, _cfg) = spawn_binary(&base_config(&emu.url()), &[]).await;
    for cred in [Cred::Query, Cred::Subprotocol] {
        let (mut ws, _) = connect(child.addr, SHAPES[0].0, SHAPES[0].1, cred)
            .await
            .unwrap();
        next(&mut ws).await;
        ws.send(Message::text(r#"{"type":"response.create"}"#))
            .await
            .unwrap();
        assert_eq!(json_of(&next(&mut ws).await)["type"], "response.done");
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    }
    let r = client()
        .post(format!(
            "http://{}/v1/chat/completions?api-key={KEY}&trace=1",
            child.addr
        ))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(format!(
            "http://{}/v1/chat/completions?subscription-key=not-{KEY}",
            child.addr
        ))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for seen in emu.requests() {
        assert_swapped(&seen);
    }
    let (_, stderr) = stop_and_collect(child).await;
    assert!(!stderr.contains(KEY), "{stderr}");
    assert!(stderr.contains("api-key=***&trace=1"), "{stderr}");
    assert!(stderr.contains("subscription-key=***"), "{stderr}");
    assert!(stderr.contains("websocket opened"), "{stderr}");
    let closed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("websocket closed"))
        .collect();
    assert_eq!(closed.len(), 2, "{stderr}");
    for line in closed {
        // The socket's usage, from its one response.done.
        assert!(line.contains("responses=1"), "{line}");
        assert!(line.contains("total_tokens="), "{line}");
        assert!(!line.contains("total_tokens=0"), "{line}");
    }
}

#[tokio::test]
async fn sigterm_closes_open_sockets_with_1001_after_the_drain_period() {
    let emu = emulator().await;
    let config = with_server(&emu, "shutdown_grace_secs = 1");
    let (child, _cfg) = spawn_binary(&config, &[]).await;
    let (mut ws, _) = connect(child.addr, SHAPES[2].0, SHAPES[2].1, Cred::Bearer)
        .await
        .unwrap();
    next(&mut ws).await;
    let pid = child.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    // Still relaying during the drain period.
    ws.send(Message::text("still here")).await.unwrap();
    let echoed = ws.next().await;
    let closed = ws.next().await;
    let (code, stderr) = stop_and_collect(child).await;
    let echoed = echoed
        .unwrap()
        .unwrap_or_else(|e| panic!("{e} (exit {code:?}): {stderr}"));
    assert_eq!(echoed, Message::text("still here"));
    match closed.unwrap().unwrap_or_else(|e| panic!("{e}: {stderr}")) {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Away);
            assert_eq!(f.reason.as_str(), "the proxy is shutting down");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("end=Shutdown"), "{stderr}");
}

#[tokio::test]
async fn realtime_usage_is_counted_and_charged_to_the_key_as_responses_complete() {
    let emu = emulator().await;
    // A session reserves 30 tokens at its handshake; its responses use them, then more.
    let text = format!(
        "{}\n[[keys]]\nname = \"voice\"\nsha256 = \"{}\"\ntoken_quota = 40\ntoken_quota_period = \"day\"\n",
        base_config(&emu.url()).replace(
            "[azure]",
            "[limits]\ndefault_completion_reservation = 30\n\n[azure]"
        ),
        entra_proxy::config::KeyDigest::of("voice-key").to_hex()
    );
    let h = proxy(emu, &text).await;
    let voice = |path: &str| {
        let mut req = format!("ws://{}{path}", h.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("api-key", "voice-key".parse().unwrap());
        req
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(voice("/v1/realtime?model=gpt-4o"))
        .await
        .unwrap();
    assert_eq!(json_of(&next(&mut ws).await)["type"], "session.created");
    let mut totals = 0;
    for said in ["a question of forty bytes, give or take", "and another"] {
        let item = serde_json::json!({"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":said}]}});
        ws.send(Message::text(item.to_string())).await.unwrap();
        next(&mut ws).await;
        ws.send(Message::text(r#"{"type":"response.create"}"#))
            .await
            .unwrap();
        let done = json_of(&next(&mut ws).await);
        assert_eq!(done["type"], "response.done");
        let usage = &done["response"]["usage"];
        let total = usage["total_tokens"].as_u64().unwrap();
        assert_eq!(
            total,
            usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
        );
        totals += total;
        // Counted as the frame passed, before the socket closes.
        let labels = [("key", "key:voice"), ("model", "gpt-4o"), ("kind", "total")];
        assert_eq!(
            metric(h.addr, "entra_proxy_tokens_total", &labels).await,
            Some(totals as f64)
        );
    }
    assert!(totals > 40, "the two responses use up the quota: {totals}");
    // Frames kept flowing unchanged after metering.
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1, 2, 3]));
    // The charge weighs on the key's next handshake.
    let Err(WsError::Http(refused)) =
        tokio_tungstenite::connect_async(voice("/v1/realtime?model=gpt-4o")).await
    else {
        panic!("the key's quota is used up");
    };
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value =
        serde_json::from_slice(refused.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
    assert_eq!(
        metric(
            h.addr,
            "entra_proxy_token_quota_remaining",
            &[("key", "key:voice")]
        )
        .await,
        Some(0.0)
    );
    h.stop().await;
}

#[tokio::test]
async fn speech_websockets_pass_through_with_the_proxys_bearer() {
    let h = start().await;
    let path =
        "/stt/speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed";
    for cred in [Cred::ApiKeyHeader, Cred::Query, Cred::Bearer] {
        h.emulator.clear_requests();
        let (path, query) = path.split_once('?').unwrap();
        let (mut ws, _) = connect(h.addr, path, query, cred)
            .await
            .unwrap_or_else(|e| panic!("{cred:?}: {e}"));
        let config =
            "Path: speech.config\r\nX-RequestId: 0123\r\nContent-Type: application/json\r\n\r\n{}";
        ws.send(Message::text(config)).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(config));
        ws.send(Message::binary(vec![0u8, 1, 2, 3])).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 1, 2, 3]));
        ws.close(None).await.unwrap();
        let seen = h.emulator.requests();
        assert_eq!(seen.len(), 1, "{cred:?}");
        assert_eq!(
            seen[0].path_and_query,
            "/stt/speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed",
            "{cred:?}"
        );
        assert_swapped(&seen[0]);
    }
    // Speech clients' own key header is a credential like api-key, and never forwarded.
    h.emulator.clear_requests();
    let mut req = format!(
        "ws://{}/speech/recognition/interactive/cognitiveservices/v1?language=de-DE",
        h.addr
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("ocp-apim-subscription-key", KEY.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("ping"));
    ws.close(None).await.unwrap();
    let seen = h.emulator.requests();
    assert!(seen[0].header("ocp-apim-subscription-key").is_none());
    assert_swapped(&seen[0]);
    // Without a credential the proxy refuses before Azure is called.
    h.emulator.clear_requests();
    let req = format!(
        "ws://{}/speech/recognition/interactive/cognitiveservices/v1",
        h.addr
    )
    .into_client_request()
    .unwrap();
    let Err(WsError::Http(refused)) = tokio_tungstenite::connect_async(req).await else {
        panic!("no credential is refused");
    };
    assert_eq!(refused.status(), 401);
    assert!(h.emulator.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn ephemeral_key_endpoints_pass_through_like_any_post() {
    let h = start().await;
    let r = post(
        &h,
        "/openai/v1/realtime/client_secrets",
        &serde_json::json!({"session": {"type": "realtime", "model": "gpt-4o", "instructions": "be brief"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["value"].as_str().unwrap().starts_with("ek_"), "{body}");
    assert!(body["expires_at"].as_i64().unwrap() > 0);
    assert_eq!(body["session"]["model"], "gpt-4o");
    assert_eq!(body["session"]["instructions"], "be brief");
    let r = post(
        &h,
        "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
        &serde_json::json!({"model": "gpt-4o", "voice": "verse"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "realtime.session");
    assert_eq!(body["voice"], "verse");
    assert!(body["client_secret"]["value"].as_str().is_some(), "{body}");
    // Azure's own refusals pass through: an unknown deployment is its 404.
    let r = post(
        &h,
        "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
        &serde_json::json!({"model": "nope"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let seen = h.emulator.requests();
    assert_eq!(
        seen.iter()
            .map(|s| s.path_and_query.as_str())
            .collect::<Vec<_>>(),
        [
            "/openai/v1/realtime/client_secrets",
            "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
            "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
        ]
    );
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_swapped(s);
    }
    h.stop().await;
}
