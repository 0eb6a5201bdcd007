//! The rest of `/v1` through the swap on a deployment-API backend: keys in query strings,
//! the Responses API (plain and streamed), multipart file uploads streamed with their boundary,
//! audio transcriptions routed by the form's `model`, and the realtime ephemeral-key endpoints
//! with their model mapped in the body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;

const BOUNDARY: &str = "entra-proxy-test-boundary-7d1f";

/// A multipart form: text fields, then one file of `file_len` bytes.
fn form(fields: &[(&str, &str)], file_name: &str, file_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    out.extend((0..file_len).map(|i| (i % 251) as u8));
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Sends `body` in 64 KiB chunks without a length (chunked), as a large upload would.
fn chunked(body: Vec<u8>) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

fn multipart() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

#[tokio::test]
async fn keys_in_the_query_authenticate_and_are_removed_before_forwarding() {
    let h = start().await;
    for name in ["api-key", "subscription-key", "Subscription-Key"] {
        h.emulator.clear_requests();
        let r = client()
            .post(h.url(&format!(
                "/openai/deployments/gpt-4o/chat/completions?a=1&{name}={KEY}&b=%20x"
            )))
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let seen = &h.emulator.requests()[0];
        assert_eq!(
            seen.path_and_query,
            "/openai/deployments/gpt-4o/chat/completions?a=1&b=%20x&api-version=2024-10-21",
            "{name}"
        );
        assert_eq!(seen.bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    }
    let r = client()
        .post(h.url("/v1/chat/completions?api-key=wrong"))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (
            401,
            "invalid_api_key".into(),
            "the key in the api-key query parameter is not a key this proxy knows".into()
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn the_responses_api_reaches_the_deployment_api_plain_and_streamed() {
    let h = start().await;
    let r = post(
        &h,
        "/v1/responses",
        &serde_json::json!({"model": "gpt-4o", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "response");
    let seen = &h.emulator.requests()[0];
    assert_eq!(
        seen.path_and_query,
        "/openai/responses?api-version=2024-10-21"
    );
    assert_eq!(seen.body_model.as_deref(), Some("gpt-4o"));
    assert!(seen.header("api-key").is_none());

    let r = post(
        &h,
        "/v1/responses",
        &serde_json::json!({"model": "gpt-4o", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (text, broken) = read_stream(r).await;
    assert!(!broken);
    assert!(text.contains("event: response.created"), "{text}");
    assert!(text.contains("event: response.completed"), "{text}");

    let r = post(
        &h,
        "/v1/responses",
        &serde_json::json!({"model": "gpt-9", "input": "hi"}),
    )
    .await;
    assert_eq!(
        error_of(r).await,
        (
            404,
            "model_not_found".into(),
            "unknown model \"gpt-9\"; this proxy serves: gpt-4o, embed".into()
        )
    );
    h.stop().await;
}

#[tokio::test]
async fn file_uploads_stream_through_with_their_boundary() {
    let h = start().await;
    // Chunked and over the replay buffer, then with a length and small enough to keep.
    for (file_len, stream) in [(5 * 1024 * 1024 + 3, true), (3 * 1024 * 1024, false)] {
        h.emulator.clear_requests();
        let body = form(&[("purpose", "batch")], "batch.jsonl", file_len);
        let total = body.len();
        let body = if stream { chunked(body) } else { body.into() };
        let r = client()
            .post(h.url("/v1/files"))
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", multipart())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file_len}");
        let got: serde_json::Value = r.json().await.unwrap();
        assert_eq!(got["bytes"], file_len);
        assert_eq!(got["purpose"], "batch");
        assert_eq!(got["filename"], "batch.jsonl");
        assert_eq!(got["emulator"]["boundary"], BOUNDARY);
        assert_eq!(got["emulator"]["content_length"], total);
        let seen = &h.emulator.requests()[0];
        assert_eq!(seen.path_and_query, "/openai/files?api-version=2024-10-21");
        assert_eq!(seen.bearer_audience.as_deref(), Some(COGNITIVE_AUD));
        assert!(!seen.headers.iter().any(|(_, v)| v.contains(KEY)));
    }
    h.stop().await;
}

#[tokio::test]
async fn transcriptions_are_routed_by_the_forms_model() {
    let h = start().await;
    let body = form(&[("model", "gpt-4o"), ("language", "en")], "a.wav", 300_000);
    let total = body.len();
    let r = client()
        .post(h.url("/v1/audio/transcriptions"))
        .header("api-key", KEY)
        .header("content-type", multipart())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["text"], "300000 bytes of audio transcribed by gpt-4o");
    assert_eq!(got["emulator"]["content_length"], total);
    assert_eq!(got["emulator"]["boundary"], BOUNDARY);
    assert_eq!(
        h.emulator.requests()[0].path_and_query,
        "/openai/deployments/gpt-4o/audio/transcriptions?api-version=2024-10-21"
    );

    let body = form(&[("model", "whisper-9")], "a.wav", 10);
    let r = client()
        .post(h.url("/v1/audio/transcriptions"))
        .header("api-key", KEY)
        .header("content-type", multipart())
        .body(chunked(body))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (
            404,
            "model_not_found".into(),
            "unknown model \"whisper-9\"; this proxy serves: gpt-4o, embed".into()
        )
    );
    let body = form(&[("language", "en")], "a.wav", 10);
    let r = client()
        .post(h.url("/v1/audio/transcriptions"))
        .header("api-key", KEY)
        .header("content-type", multipart())
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (400, "missing_model"));
    h.stop().await;
}

/// The base config plus a model whose name is not its deployment's.
async fn start_with_realtime_model(api: &str) -> Harness {
    let emu = emulator().await;
    let text = base_config(&emu.url())
        .replace(
            "api_version = \"2024-10-21\"",
            &format!("api_version = \"2024-10-21\"\n{api}"),
        )
        .replace(
            "[[keys]]",
            "[[models]]\nname = \"gpt-realtime\"\nbackend = \"primary\"\ndeployment = \"gpt-4o\"\n\n[[keys]]",
        );
    proxy(emu, &text).await
}

/// What Azure saw: the path, and that it carried the proxy's bearer and no trace of the key.
fn assert_swapped(h: &Harness, path_and_query: &str) {
    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    assert_eq!(seen.path_and_query, path_and_query);
    assert_eq!(seen.bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    assert!(seen.header("api-key").is_none());
    assert!(!seen.path_and_query.contains(KEY));
    assert!(!seen.headers.iter().any(|(_, v)| v.contains(KEY)));
}

#[tokio::test]
async fn azures_own_v1_ephemeral_key_path_maps_the_sessions_model_too() {
    let h = start_with_realtime_model("").await;
    let r = post(
        &h,
        "/openai/v1/realtime/client_secrets",
        &serde_json::json!({
            "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "be brief"},
            "model": "top-level stays",
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    // The emulator answers only for a deployment it has, and echoes the one it was sent.
    assert_eq!(got["session"]["model"], "gpt-4o");
    assert_eq!(got["session"]["instructions"], "be brief");
    assert_swapped(&h, "/openai/v1/realtime/client_secrets");
    assert_eq!(
        h.emulator.requests()[0].body_model.as_deref(),
        Some("top-level stays"),
        "only the session's model is mapped"
    );
    h.stop().await;
}

#[tokio::test]
async fn realtime_ephemeral_keys_reach_the_deployment_api_with_the_model_mapped() {
    let h = start_with_realtime_model("").await;
    let r = post(
        &h,
        "/v1/realtime/client_secrets",
        &serde_json::json!({
            "expires_after": {"anchor": "created_at", "seconds": 600},
            "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "be brief"},
        }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    // The emulator answers only for a deployment it has, and echoes the one it was sent.
    assert_eq!(got["session"]["model"], "gpt-4o");
    assert_eq!(got["session"]["instructions"], "be brief");
    assert!(got["value"].as_str().unwrap().starts_with("ek_"));
    assert_swapped(&h, "/openai/v1/realtime/client_secrets");

    h.emulator.clear_requests();
    let r = client()
        .post(h.url("/v1/realtime/sessions"))
        .header("authorization", format!("Bearer {KEY}"))
        .json(&serde_json::json!({"model": "gpt-realtime", "voice": "verse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["model"], "gpt-4o");
    assert_eq!(got["voice"], "verse");
    assert!(
        got["client_secret"]["value"]
            .as_str()
            .unwrap()
            .starts_with("ek_")
    );
    assert_swapped(
        &h,
        "/openai/realtimeapi/sessions?api-version=2025-04-01-preview",
    );
    assert_eq!(
        h.emulator.requests()[0].body_model.as_deref(),
        Some("gpt-4o")
    );
    h.stop().await;
}

#[tokio::test]
async fn realtime_ephemeral_keys_reach_a_v1_backend_with_the_model_mapped() {
    let h = start_with_realtime_model("api = \"v1\"").await;
    let r = post(
        &h,
        "/v1/realtime/client_secrets",
        &serde_json::json!({"session": {"type": "realtime", "model": "gpt-realtime"}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["session"]["model"], "gpt-4o");
    assert_swapped(&h, "/openai/v1/realtime/client_secrets");
    h.stop().await;
}

#[tokio::test]
async fn realtime_ephemeral_keys_refuse_an_unknown_model_or_a_malformed_session() {
    let h = start_with_realtime_model("").await;
    let r = post(
        &h,
        "/v1/realtime/client_secrets",
        &serde_json::json!({"session": {"type": "realtime", "model": "gpt-9"}}),
    )
    .await;
    assert_eq!(
        error_of(r).await,
        (
            404,
            "model_not_found".into(),
            "unknown model \"gpt-9\"; this proxy serves: gpt-4o, embed, gpt-realtime".into()
        )
    );
    let r = post(
        &h,
        "/v1/realtime/sessions",
        &serde_json::json!({"model": "gpt-9"}),
    )
    .await;
    assert_eq!(error_of(r).await.0, 404);
    let r = post(
        &h,
        "/v1/realtime/client_secrets",
        &serde_json::json!({"session": ["gpt-realtime"]}),
    )
    .await;
    assert_eq!(
        error_of(r).await,
        (
            400,
            "invalid_json".into(),
            "the request body is not JSON (\"session\" must be an object, got [\"gpt-realtime\"]); /v1/realtime/client_secrets expects a JSON object".into()
        )
    );
    let r = post(
        &h,
        "/v1/realtime/client_secrets",
        &serde_json::json!({"session": {"type": "realtime", "model": 4}}),
    )
    .await;
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (400, "invalid_json"));
    assert!(
        message.contains("\"session.model\" must be a string, got 4"),
        "{message}"
    );
    assert!(h.emulator.requests().is_empty(), "nothing reached Azure");
    h.stop().await;
}

#[tokio::test]
async fn a_whole_url_as_the_path_or_a_slip_in_a_v1_path_is_answered_without_calling_azure() {
    let h = start().await;
    let cases = [
        (
            "/https://myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            "send only the path after the host, /openai/deployments/gpt-4o/chat/completions,",
        ),
        (
            "/myres.openai.azure.com/openai/deployments/gpt-4o/chat/completions",
            "azure_endpoint=",
        ),
        ("/v1/chat/completion", "did you mean /v1/chat/completions?"),
        ("/v1/embedding", "did you mean /v1/embeddings?"),
    ];
    for (path, says) in cases {
        let r = client()
            .post(h.url(path))
            .header("api-key", KEY)
            .json(&chat_body("gpt-4o"))
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "no_route"),
            "{path}: {message}"
        );
        assert!(message.contains(says), "{path}: {message}");
    }
    assert!(
        h.emulator
            .requests()
            .iter()
            .all(|r| !r.path_and_query.starts_with("/openai")),
        "nothing reached Azure's data plane"
    );
    h.stop().await;
}
