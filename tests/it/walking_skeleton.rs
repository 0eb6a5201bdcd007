//! The whole path over real HTTP: a key in, a cached managed-identity token out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AzureSample, EmulatorConfig, Fault, IdentityFault};
use entra_proxy::claims::decode_unverified;
use futures_util::StreamExt as _;
use std::time::{Duration, Instant};

#[tokio::test]
async fn api_key_is_swapped_for_a_cognitiveservices_bearer_and_never_forwarded() {
    let h = start().await;
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(
        req.path_and_query,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    );
    assert!(
        req.header("api-key").is_none(),
        "the client's key reached Azure"
    );
    let bearer = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .expect("a bearer token reached Azure");
    assert_ne!(bearer, KEY);
    let claims = decode_unverified(bearer).unwrap().claims;
    assert_eq!(claims.audience(), Some(COGNITIVE_AUD));
    assert_eq!(req.bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    h.stop().await;
}

#[tokio::test]
async fn connection_headers_stay_with_the_connection_and_the_rest_reach_azure() {
    let h = start().await;
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .header("connection", "keep-alive, X-Client-Hop")
        .header("x-client-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0OnNlY3JldA==")
        .header("x-custom", "kept")
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();

    let seen = h.emulator.requests();
    let req = &seen[0];
    assert_eq!(req.header("x-custom"), Some("kept"));
    for gone in [
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "api-key",
    ] {
        assert!(req.header(gone).is_none(), "{gone} reached Azure");
    }
    // Azure's own request id header carries the proxy's, for support tickets.
    assert_eq!(
        req.header("x-ms-client-request-id"),
        Some(request_id.as_str())
    );
    h.stop().await;
}

#[tokio::test]
async fn openai_sdk_style_bearer_key_works_too() {
    let h = start().await;
    let r = client()
        .post(h.url("/v1/embeddings"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "embed", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = h.emulator.requests();
    assert_eq!(
        seen[0].path_and_query,
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    );
    assert_ne!(
        seen[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    h.stop().await;
}

#[tokio::test]
async fn missing_or_wrong_key_gets_401_and_azure_is_not_called() {
    let h = start().await;
    for (name, value) in [
        ("x-other", "1"),
        ("api-key", "wrong-key"),
        ("authorization", "Bearer wrong-key"),
    ] {
        let r = client()
            .post(h.url("/v1/chat/completions"))
            .header(name, value)
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{name}");
        let body: serde_json::Value = r.json().await.unwrap();
        let code = body["error"]["code"].as_str().unwrap();
        assert!(
            code == "missing_credential" || code == "invalid_api_key",
            "{body}"
        );
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        assert!(!body.to_string().contains("wrong-key"));
    }
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

#[tokio::test]
async fn sixteen_concurrent_cold_requests_make_one_token_acquisition() {
    let h = start().await;
    for status in concurrent_chats(&h, 16, ("api-key", KEY)).await {
        assert_eq!(status, 200);
    }
    let stats = h.emulator.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.data_requests, 16);
    h.stop().await;
}

#[tokio::test]
async fn streamed_answers_arrive_event_by_event() {
    let emu = emulator_with(EmulatorConfig {
        stream_events: 5,
        stream_interval: Duration::from_millis(150),
        ..EmulatorConfig::default()
    })
    .await;
    let text = base_config(&emu.url());
    let h = proxy(emu, &text).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = serde_json::json!(true);
    let started = Instant::now();
    let r = post(
        &h,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        &body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut arrivals = Vec::new();
    let mut all = String::new();
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        arrivals.push(started.elapsed());
        all.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(all.trim_end().ends_with("data: [DONE]"), "{all}");
    assert!(
        arrivals.len() >= 3,
        "events were buffered into {} chunks",
        arrivals.len()
    );
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    assert!(
        last - first >= Duration::from_millis(400),
        "first event at {first:?}, last at {last:?}: the stream was buffered"
    );
    h.stop().await;
}

#[tokio::test]
async fn unknown_model_is_404_listing_models_and_bad_json_is_400() {
    let h = start().await;
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-5")).await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(
        body["error"]["message"],
        "unknown model \"gpt-5\"; this proxy serves: gpt-4o, embed"
    );
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .header("content-type", "application/json")
        .body("this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

#[tokio::test]
async fn azure_paths_pass_through_and_azure_errors_come_back_unchanged() {
    let h = start().await;
    // Explicit api-version is kept.
    let r = post(
        &h,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview",
        &chat_body("x"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.emulator.requests()[0].path_and_query,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview"
    );
    // A deployment the backend lacks: Azure's own 404 body, byte for byte.
    h.emulator.script(
        "gpt-4o",
        vec![Fault::Sample(AzureSample::DeploymentNotFound404)],
    );
    let r = post(
        &h,
        "/openai/deployments/gpt-4o/chat/completions",
        &chat_body("x"),
    )
    .await;
    assert_eq!(r.status(), 404);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"code\":\"DeploymentNotFound\""), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn list_models_is_answered_by_the_proxy() {
    let h = start().await;
    let r = client()
        .get(h.url("/v1/models"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gpt-4o", "embed"]);
    h.stop().await;
}

#[tokio::test]
async fn only_the_exact_own_paths_are_the_proxys_everything_else_is_proxied() {
    let h = start().await;
    let get = |path: &'static str| client().get(h.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let r = client().post(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405, "own endpoints answer GET only");
    // Near misses are Azure paths like any other: the proxy asks for a credential.
    for path in ["/healthz/", "/metricsx", "/debug/identity/x"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().contains_key("x-request-id"), "{path}");
    }
    assert!(h.emulator.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_token() {
    let emu = emulator().await;
    emu.set_identity_fault(Some(IdentityFault::Down));
    // IMDS credentials retry 5xx on their own; the proxy bounds each acquisition.
    let text = base_config(&emu.url()).replace(
        "[azure]",
        "[upstream]\nidentity_timeout_secs = 1\n\n[azure]",
    );
    let h = proxy(emu, &text).await;
    let r = client().get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = serde_json::Value::Null;
    for _ in 0..50 {
        let r = client().get(h.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        body = r.json().await.unwrap();
        if body["scopes"][0]["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["scopes"][0]["has_token"], false);
    assert!(body["scopes"][0]["last_error"].is_string(), "{body}");
    assert!(body["scopes"][0]["failing_since"].is_number(), "{body}");
    // With no token at all, requests get a 503 that says the identity is unreachable.
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "identity_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failing since"),
        "{body}"
    );
    h.emulator.set_identity_fault(None);
    wait_ready(&h).await;
    h.stop().await;
}

/// Azure's answer passes through as is: its length reaches the client (no re-chunking).
#[tokio::test]
async fn answers_keep_azures_content_length() {
    let h = start().await;
    let r = post(
        &h,
        "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        &chat_body("gpt-4o"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let declared: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(declared, r.bytes().await.unwrap().len());
    h.stop().await;
}

/// A proxy that takes request bodies of at most 1 KiB.
async fn with_1_kib_body_limit() -> Harness {
    let emu = emulator().await;
    let text = base_config(&emu.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nmax_body_bytes = 1024",
    );
    proxy(emu, &text).await
}

/// A body without a length is streamed to Azure as it arrives; once it outgrows
/// `max_body_bytes` the proxy stops and answers 413 itself.
#[tokio::test]
async fn oversized_streamed_bodies_get_413() {
    let h = with_1_kib_body_limit().await;
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok("{\"pad\":\""), Ok(&*"x".repeat(4096).leak()), Ok("\"}")];
    let r = client()
        .post(h.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"))
        .header("api-key", KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    h.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = with_1_kib_body_limit().await;
    let big = "x".repeat(4096);
    for path in [
        "/v1/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions",
    ] {
        let r = post(
            &h,
            path,
            &serde_json::json!({"model": "gpt-4o", "pad": big}),
        )
        .await;
        assert_eq!(r.status(), 413, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "body_too_large");
    }
    h.stop().await;
}

/// A client that opens its keep-alive connections in one burst gets them spread over the
/// serving threads, not all on whichever thread woke first; a closed one leaves its count.
#[tokio::test]
async fn a_burst_of_connections_is_spread_over_the_serving_threads() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let emu = emulator().await;
    let config = base_config(&emu.url()).replace("[server]\n", "[server]\nworkers = 2\n");
    let (child, _cfg) = spawn_binary(&config, &[]).await;
    let addr = child.addr;
    let opened = (0..8).map(|_| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = c.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..n]
        );
        c
    });
    let mut open = futures_util::future::join_all(opened).await;
    let per_thread = |text: &str| {
        ["0", "1"].map(|w| {
            metric_in(text, "entra_proxy_open_connections", &[("worker", w)]).unwrap_or(0.0)
        })
    };
    // The 8 kept open and the one reading /metrics.
    let [a, b] = per_thread(&metrics_text(addr).await);
    assert_eq!(a + b, 9.0, "{a} + {b}");
    assert!((a - b).abs() <= 2.0, "uneven: {a} and {b}");
    open.truncate(2);
    let mut left = [a, b];
    for _ in 0..100 {
        left = per_thread(&metrics_text(addr).await);
        if left[0] + left[1] == 3.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left[0] + left[1], 3.0, "{left:?}");
    drop(open);
    let _ = stop_and_collect(child).await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_and_a_head_split_at_its_first_byte_are_both_served() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let h = start().await;
    // HTTP/2 in the clear, told from its preface.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(h.url("/v1/chat/completions"))
        .header("api-key", KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    // HTTP/1.1 whose first byte alone could still be the preface's: the rest is waited for.
    let body = chat_body("gpt-4o").to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\napi-key: {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    conn.write_all(&request.as_bytes()[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    conn.write_all(&request.as_bytes()[1..]).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("chat.completion"), "{answer}");
    assert_eq!(h.emulator.requests().len(), 2);
    h.stop().await;
}
