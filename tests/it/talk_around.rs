//! Limits a client cannot talk around, over real HTTP: a model named twice in any letter case
//! (in the body, or in a realtime handshake's query) is refused before it reaches Azure, and
//! the proxy's own pages treat an IPv4-mapped loopback peer (a listener on `[::]`) as loopback.

use crate::common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A key that may use `embed` only, so a second `model` would talk around its policy.
fn config(emu: &url::Url) -> String {
    format!(
        "{}\n[[keys]]\nname = \"embed-only\"\nsha256 = \"{}\"\nmodels = [\"embed\"]\n",
        base_config(emu),
        entra_proxy::config::KeyDigest::of("embed-only-key").to_hex()
    )
}

#[tokio::test]
async fn a_body_naming_model_twice_in_any_case_is_refused_before_azure() {
    let emu = emulator().await;
    let text = config(&emu.url());
    let h = proxy(emu, &text).await;
    for body in [
        r#"{"model":"embed","Model":"gpt-4o","input":"x"}"#,
        r#"{"MODEL":"gpt-4o","model":"embed","input":"x"}"#,
        r#"{"model":"embed","mod\u0065l":"gpt-4o","input":"x"}"#,
    ] {
        let r = client()
            .post(h.url("/v1/embeddings"))
            .header("api-key", "embed-only-key")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "duplicate_parameter"),
            "{body}"
        );
        assert_eq!(
            message,
            "the request names \"model\" more than once in its JSON body (letter case aside); Azure reads names without regard to case, so name it once"
        );
    }
    assert_eq!(h.emulator.stats().data_requests, 0, "nothing reached Azure");
    // Named once, in any case, it is the model: mapped, checked against the key's models.
    let r = client()
        .post(h.url("/v1/embeddings"))
        .header("api-key", "embed-only-key")
        .json(&json!({"Model": "gpt-4o", "input": "x"}))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    let r = client()
        .post(h.url("/v1/embeddings"))
        .header("api-key", "embed-only-key")
        .json(&json!({"Model": "embed", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn a_realtime_query_naming_model_or_deployment_twice_is_refused() {
    let emu = emulator().await;
    let text = base_config(&emu.url());
    let h = proxy(emu, &text).await;
    for (path, query) in [
        ("/openai/v1/realtime", "model=gpt-4o&Model=gpt-4o-mini"),
        ("/v1/realtime", "model=gpt-4o&MODEL=gpt-4o"),
        (
            "/openai/realtime",
            "deployment=gpt-4o&Deployment=other&api-version=2024-10-01-preview",
        ),
    ] {
        let mut req = format!("ws://{}{path}?{query}", h.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("api-key", KEY.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 400, "{query}");
                let body: serde_json::Value =
                    serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["error"]["code"], "duplicate_parameter", "{query}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("more than once in its query"),
                    "{body}"
                );
            }
            other => panic!("{query}: expected a 400 handshake, got {other:?}"),
        }
    }
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

#[tokio::test]
async fn an_ipv4_mapped_loopback_peer_sees_the_status_page_on_a_dual_stack_listener() {
    let emu = emulator().await;
    let text = base_config(&emu.url());
    let config = entra_proxy::config::Config::parse(&text, "test", &|_| None).unwrap();
    let state = std::sync::Arc::new(
        entra_proxy::state::AppState::build(config, &entra_proxy::identity::IdentityEnv::default())
            .unwrap(),
    );
    // A listener on [::] sees an IPv4 client as ::ffff:127.0.0.1.
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(entra_proxy::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    for path in ["/status", "/status.json"] {
        let r = client()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} from 127.0.0.1 through [::]");
    }
    let r = client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the landing page");
    let _ = stop.send(());
    let _ = server.await;
    drop(emu);
}
