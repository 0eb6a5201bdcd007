//! The proxy's own refusals where people look: every one has a JSON body (431 included), a
//! `rejected` log line, a count in `entra_proxy_rejected_requests_total{code}`, and a place on
//! `/status` in a list of its own beside Azure's diagnoses; and `GET /` on loopback says where
//! to look.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::ResourceKind;
use entra_proxy::config::KeyDigest;

const LIMITED_KEY: &str = "test-key-limited-to-one-a-minute";

/// The base config with small body and header limits, and a second key allowed one request a
/// minute and only gpt-4o.
fn config(emu: &url::Url) -> String {
    base_config(emu)
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 4096\nmax_header_bytes = 8192",
        )
        .replace(
            "[[keys]]",
            &format!(
                "[[keys]]\nname = \"limited\"\nsha256 = \"{}\"\nrequests_per_minute = 1\nmodels = [\"gpt-4o\"]\n\n[[keys]]",
                KeyDigest::of(LIMITED_KEY).to_hex()
            ),
        )
}

/// Sends `request`, checks it is refused with `status` and the proxy's JSON error `code`, and
/// returns the answer's request id.
async fn refused(request: reqwest::RequestBuilder, status: u16, code: &str) -> String {
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), status, "{code}");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["content-type"], "application/json", "{code}");
    let (_, got, message) = error_of(r).await;
    assert_eq!(got, code, "{message}");
    assert!(!message.is_empty());
    id
}

#[tokio::test]
async fn each_refusal_is_answered_in_json_counted_and_listed_with_its_fix() {
    let emu = emulator().await;
    let text = config(&emu.url());
    let h = proxy(emu, &text).await;
    let c = client();
    let chat = h.url("/v1/chat/completions");
    let mut expected = Vec::new();
    let id = refused(
        c.post(&chat).json(&chat_body("gpt-4o")),
        401,
        "missing_credential",
    )
    .await;
    expected.push((id, 401, "missing_credential"));
    let id = refused(
        c.post(format!("{chat}?api-key=not-the-key"))
            .json(&chat_body("gpt-4o")),
        401,
        "invalid_api_key",
    )
    .await;
    expected.push((id, 401, "invalid_api_key"));
    let id = refused(
        c.post(&chat)
            .header("api-key", KEY)
            .json(&chat_body("gpt-5")),
        404,
        "model_not_found",
    )
    .await;
    expected.push((id, 404, "model_not_found"));
    let id = refused(
        c.post(&chat)
            .header("api-key", KEY)
            .body("x".repeat(10_000))
            .header("content-type", "application/json"),
        413,
        "body_too_large",
    )
    .await;
    expected.push((id, 413, "body_too_large"));
    let id = refused(
        c.post(&chat)
            .header("api-key", KEY)
            .header("x-padding", "a".repeat(20_000))
            .json(&chat_body("gpt-4o")),
        431,
        "headers_too_large",
    )
    .await;
    expected.push((id, 431, "headers_too_large"));
    let id = refused(
        c.post(&chat)
            .header("api-key", LIMITED_KEY)
            .json(&chat_body("embed")),
        403,
        "model_not_allowed",
    )
    .await;
    expected.push((id, 403, "model_not_allowed"));
    let r = c
        .post(&chat)
        .header("api-key", LIMITED_KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = refused(
        c.post(&chat)
            .header("api-key", LIMITED_KEY)
            .json(&chat_body("gpt-4o")),
        429,
        "rate_limited",
    )
    .await;
    expected.push((id, 429, "rate_limited"));

    let v: serde_json::Value = c
        .get(h.url("/status.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refusals = v["refusals"].as_array().unwrap();
    assert_eq!(refusals.len(), expected.len(), "{v}");
    // Newest first.
    for (r, (id, status, code)) in refusals.iter().zip(expected.iter().rev()) {
        assert_eq!(r["request_id"], *id, "{r}");
        assert_eq!(r["status"], *status, "{r}");
        assert_eq!(r["code"], *code, "{r}");
        assert_eq!(r["method"], "POST", "{r}");
        assert_eq!(r["path"], "/v1/chat/completions", "{r}");
        let fix = r["fix"].as_str().unwrap();
        assert!(fix.ends_with('.') && fix.len() > 20, "{r}");
        assert!(r["at"].as_i64().unwrap() <= v["now"].as_i64().unwrap());
    }
    // The caller as far as known: none for a refused credential, the key's name after it.
    assert!(refusals.last().unwrap()["caller"].is_null());
    assert_eq!(refusals[0]["caller"], "key:limited");
    assert_eq!(refusals[1]["caller"], "key:limited");
    assert!(
        refusals[2]["fix"]
            .as_str()
            .unwrap()
            .contains("max_header_bytes"),
        "{}",
        refusals[2]
    );
    assert!(
        v["diagnoses"].as_array().unwrap().is_empty(),
        "refusals are not Azure's diagnoses: {v}"
    );
    // Never the key sent in the query.
    assert!(!v.to_string().contains("not-the-key"));

    let metrics = metrics_text(h.addr).await;
    for (_, _, code) in &expected {
        let n = metric_in(
            &metrics,
            "entra_proxy_rejected_requests_total",
            &[("code", code)],
        );
        assert!(n >= Some(1.0), "{code}: {n:?}");
    }
    // Every code is there from the start, so a rate over it has a beginning.
    assert!(
        metric_in(
            &metrics,
            "entra_proxy_rejected_requests_total",
            &[("code", "too_many_websockets")]
        )
        .is_some()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_flood_of_refusals_leaves_azures_diagnoses_on_the_status_page() {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    // A Foundry resource on the cognitiveservices scope: Azure answers 401, the proxy explains.
    let text = base_config(&emu.url()).replacen(
        "[[models]]",
        &format!(
            "[[backends]]\nname = \"foundry\"\nendpoint = \"{foundry}\"\n\n[[models]]\nname = \"foundry-chat\"\nbackend = \"foundry\"\ndeployment = \"gpt-4o\"\n\n[[models]]"
        ),
        1,
    );
    let h = proxy(emu, &text).await;
    let r = post(&h, "/v1/chat/completions", &chat_body("foundry-chat")).await;
    assert_eq!(r.status(), 401);
    for _ in 0..70 {
        let r = client()
            .post(h.url("/v1/chat/completions"))
            .header("api-key", "wrong")
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let v = status_json_at(h.addr).await;
    assert_eq!(v["refusals"].as_array().unwrap().len(), 50);
    let d = v["diagnoses"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{v}");
    assert_eq!(d[0]["code"], "audience-mismatch");
    let html = client()
        .get(h.url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<section id=\"refusals\">"), "{html}");
    assert!(html.contains("<code>invalid_api_key</code>"), "{html}");
    assert!(html.contains("<code>audience-mismatch</code>"), "{html}");
    h.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_a_json_431_a_log_line_and_a_count_even_past_the_http_buffer() {
    let emu = emulator().await;
    let text = config(&emu.url());
    let (child, _cfg) = spawn_binary(&text, &[]).await;
    let url = format!("http://{}/v1/chat/completions", child.addr);
    let r = client()
        .post(&url)
        .header("api-key", KEY)
        .header("x-request-id", "big-head-1")
        .header("x-padding", "a".repeat(20_000))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(r.headers()["x-request-id"], "big-head-1");
    assert_eq!(r.headers()["connection"], "close");
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        message.contains("over the limit of 8192 bytes (server.max_header_bytes)"),
        "{message}"
    );
    // Far past even the buffer the HTTP layer is given: it answers itself (no body), and the
    // proxy still logs, counts and lists it.
    let r = client()
        .post(&url)
        .header("x-padding", "a".repeat(400_000))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }
    // More header fields than the HTTP layer parses: the same.
    let mut many = client().get(&url);
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "1");
    }
    if let Ok(r) = many.send().await {
        assert_eq!(r.status(), 431);
    }
    let mut seen = 0;
    for _ in 0..100 {
        let v: serde_json::Value = reqwest::get(format!("http://{}/status.json", child.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen = v["refusals"].as_array().unwrap().len();
        if seen == 3 {
            let r = &v["refusals"];
            assert_eq!(r[2]["request_id"], "big-head-1");
            for i in 0..3 {
                assert_eq!(r[i]["code"], "headers_too_large");
            }
            assert_eq!(r[0]["path"], "-");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 3);
    let n = metric(
        child.addr,
        "entra_proxy_rejected_requests_total",
        &[("code", "headers_too_large")],
    )
    .await;
    assert_eq!(n, Some(3.0));
    assert_eq!(emu.stats().data_requests, 0, "nothing reached Azure");
    let (_, logs) = stop_and_collect(child).await;
    let rejected: Vec<&str> = logs
        .lines()
        .filter(|l| {
            l.contains("entra_proxy::access: rejected ") && l.contains("code=headers_too_large")
        })
        .collect();
    assert_eq!(rejected.len(), 3, "{logs}");
    assert!(
        rejected[0].contains("request_id=big-head-1 "),
        "{}",
        rejected[0]
    );
    assert!(rejected[0].contains(" status=431 "), "{}", rejected[0]);
    assert!(
        !logs.contains(&"a".repeat(100)),
        "the padding is not logged"
    );
}

#[tokio::test]
async fn get_slash_on_loopback_says_where_to_look() {
    let h = start().await;
    let r = client().get(h.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "/status");
    assert_eq!(v["metrics"], "/metrics");
    assert!(v["docs"].as_str().unwrap().contains("docs/src"), "{v}");
    let r = client()
        .get(h.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(html.contains("<a href=\"/status\">/status</a>"), "{html}");
    // Other methods and paths are proxied as before.
    let r = client().post(h.url("/")).send().await.unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (401, "missing_credential"));
    // Through the router with a peer elsewhere: nothing is shown.
    let remote: std::net::SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let app = entra_proxy::server::router(h.state.clone()).layer(axum::middleware::map_request(
        move |mut r: axum::extract::Request| async move {
            r.extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            r
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let r = client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (404, "no_route"));
    h.stop().await;
}
