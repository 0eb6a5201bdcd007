//! Every Azure AI surface with the right audience, over real HTTP: an Azure OpenAI and a Foundry
//! backend side by side, the `/openai/v1` API (as is, and as the target of `/v1` on an
//! `api = "v1"` backend, plain and streamed), and `auto` identity choosing the pod's workload
//! identity over IMDS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::Cloud;
use azure_emulator::{Emulator, EmulatorConfig, MintSpec, ResourceKind};
use entra_proxy::claims::decode_unverified;
use entra_proxy::config::KeyDigest;

const FOUNDRY_AUD: &str = "https://ai.azure.com";

fn two_backends_config(emu: &Emulator, foundry: &url::Url) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
debug = true

[azure]
emulator = "{emu}"

[identity]
kind = "managed-identity"

[[backends]]
name = "openai"
endpoint = "{emu}"

[[backends]]
name = "foundry"
endpoint = "{foundry}"
scope = "https://ai.azure.com/.default"

[[models]]
name = "gpt-4o"
backend = "openai"
deployment = "gpt-4o"

[[models]]
name = "foundry-chat"
backend = "foundry"
deployment = "gpt-4o"

[[keys]]
name = "team-a"
sha256 = "{digest}"
"#,
        emu = emu.url(),
        digest = KeyDigest::of(KEY).to_hex()
    )
}

/// The base config with the backend on the v1 API and a model whose name is not its deployment.
fn v1_backend_config(emu: &Emulator) -> String {
    base_config(&emu.url())
        .replace(
            "api_version = \"2024-10-21\"",
            "api_version = \"2024-10-21\"\napi = \"v1\"",
        )
        .replace(
            "[[keys]]",
            "[[models]]\nname = \"smart\"\nbackend = \"primary\"\ndeployment = \"gpt-4o\"\n\n[[keys]]",
        )
}

fn bearer_of(seen: &azure_emulator::SeenRequest) -> String {
    seen.header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string()
}

/// SSE events as (event name, data), with ids and timestamps (which differ per answer) removed.
fn normalized_events(text: &str) -> Vec<(Option<String>, serde_json::Value)> {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for key in ["id", "item_id", "created", "created_at", "completed_at"] {
                    map.remove(key);
                }
                map.values_mut().for_each(scrub);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    assert!(
        text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = None;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            let data = data.expect("every event has data");
            let mut value = if data == "[DONE]" {
                serde_json::Value::String(data)
            } else {
                serde_json::from_str(&data).unwrap()
            };
            scrub(&mut value);
            (name, value)
        })
        .collect()
}

/// The same request straight to the emulator with a valid token: what Azure itself streams.
async fn direct_stream(emu: &Emulator, path: &str, body: &serde_json::Value) -> String {
    let token = emu.mint(&MintSpec::new(COGNITIVE_AUD));
    let url = emu.url().join(path.trim_start_matches('/')).unwrap();
    let r = client()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn two_backends_with_two_audiences_get_two_tokens_each_with_its_own_aud() {
    let emu = emulator().await;
    let foundry = emu.add_resource(ResourceKind::Foundry).await.unwrap();
    let text = two_backends_config(&emu, &foundry);
    let h = proxy(emu, &text).await;
    for _ in 0..2 {
        for model in ["gpt-4o", "foundry-chat"] {
            let r = post(&h, "/v1/chat/completions", &chat_body(model)).await;
            assert_eq!(r.status(), 200, "{model}");
        }
    }
    let seen = h.emulator.requests();
    assert_eq!(seen.len(), 4);
    for pair in seen.chunks(2) {
        assert_eq!(pair[0].bearer_audience.as_deref(), Some(COGNITIVE_AUD));
        assert_eq!(pair[1].bearer_audience.as_deref(), Some(FOUNDRY_AUD));
        assert_eq!(
            pair[1].path_and_query,
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
    }
    let (openai_token, foundry_token) = (bearer_of(&seen[0]), bearer_of(&seen[1]));
    assert_ne!(openai_token, foundry_token, "two audiences share a token");
    // Cached per scope: the second round reused both.
    assert_eq!(bearer_of(&seen[2]), openai_token);
    assert_eq!(bearer_of(&seen[3]), foundry_token);
    let foundry_claims = decode_unverified(&foundry_token).unwrap().claims;
    assert_eq!(foundry_claims.audience(), Some(FOUNDRY_AUD));
    let stats = h.emulator.stats();
    assert_eq!(
        stats.token_requests, 2,
        "one acquisition per scope: {stats:?}"
    );

    let r = client().get(h.url("/debug/identity")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let backends = body["backends"].as_array().unwrap();
    let by_name = |n: &str| backends.iter().find(|b| b["backend"] == n).unwrap();
    assert_eq!(
        by_name("openai")["scope"],
        "https://cognitiveservices.azure.com/.default"
    );
    assert_eq!(by_name("foundry")["scope"], "https://ai.azure.com/.default");
    for (name, aud) in [("openai", COGNITIVE_AUD), ("foundry", FOUNDRY_AUD)] {
        let t = &by_name(name)["token"];
        assert_eq!(t["acquisitions"], 1, "{name}: {body}");
        assert_eq!(t["claims"]["aud"], aud, "{name}: {body}");
    }
    let r = client().get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["scopes"].as_array().unwrap().len(), 2, "{ready}");
    h.stop().await;
}

#[tokio::test]
async fn azure_v1_paths_pass_through_without_api_version() {
    let h = start().await;
    let r = post(&h, "/openai/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let r = post(
        &h,
        "/openai/v1/responses",
        &serde_json::json!({"model": "gpt-4o", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["model"], "gpt-4o");
    // A configured model name in `model` is mapped to its deployment.
    let r = post(
        &h,
        "/openai/v1/embeddings",
        &serde_json::json!({"model": "embed", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);

    let seen = h.emulator.requests();
    let paths: Vec<&str> = seen.iter().map(|s| s.path_and_query.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/openai/v1/chat/completions",
            "/openai/v1/responses",
            "/openai/v1/embeddings"
        ]
    );
    let models: Vec<Option<&str>> = seen.iter().map(|s| s.body_model.as_deref()).collect();
    assert_eq!(
        models,
        [
            Some("gpt-4o"),
            Some("gpt-4o"),
            Some("text-embedding-3-small")
        ]
    );
    assert!(seen.iter().all(|s| s.header("api-key").is_none()));
    assert!(
        seen.iter()
            .all(|s| s.bearer_audience.as_deref() == Some(COGNITIVE_AUD))
    );
    // The rest under /openai/v1/ passes through too, GET included.
    let r = client()
        .get(h.url("/openai/v1/models"))
        .header("api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["data"][0]["id"], "gpt-4o");
    assert_eq!(
        h.emulator.requests().last().unwrap().path_and_query,
        "/openai/v1/models"
    );
    h.stop().await;
}

#[tokio::test]
async fn usgov_cloud_asks_for_and_sends_the_us_government_audience() {
    let emu = emulator_with(EmulatorConfig {
        cloud: Cloud::Usgov,
        ..EmulatorConfig::default()
    })
    .await;
    let text = base_config(&emu.url()).replace("[azure]\n", "[azure]\ncloud = \"usgov\"\n");
    assert!(text.contains("cloud = \"usgov\""));
    let h = proxy(emu, &text).await;
    let r = post(&h, "/v1/chat/completions", &chat_body("gpt-4o")).await;
    assert_eq!(r.status(), 200);
    let seen = h.emulator.requests();
    assert_eq!(
        seen[0].bearer_audience.as_deref(),
        Some("https://cognitiveservices.azure.us")
    );
    let r = client().get(h.url("/readyz")).send().await.unwrap();
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        ready["scopes"][0]["scope"],
        "https://cognitiveservices.azure.us/.default"
    );
    h.stop().await;
}

#[tokio::test]
async fn v1_requests_on_an_api_v1_backend_go_to_openai_v1_with_model_rewritten() {
    let emu = emulator().await;
    let text = v1_backend_config(&emu);
    let h = proxy(emu, &text).await;
    let r = post(
        &h,
        "/v1/responses",
        &serde_json::json!({"model": "smart", "input": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["model"], "gpt-4o");
    let r = post(&h, "/v1/chat/completions", &chat_body("smart")).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["model"], "gpt-4o");

    let seen = h.emulator.requests();
    assert_eq!(seen[0].path_and_query, "/openai/v1/responses");
    assert_eq!(seen[1].path_and_query, "/openai/v1/chat/completions");
    for s in &seen {
        assert_eq!(s.body_model.as_deref(), Some("gpt-4o"));
        assert!(!s.path_and_query.contains("api-version"));
    }
    h.stop().await;
}

#[tokio::test]
async fn streamed_chat_on_an_api_v1_backend_passes_events_through_unchanged() {
    let emu = emulator().await;
    let text = v1_backend_config(&emu);
    let h = proxy(emu, &text).await;
    let mut body = chat_body("smart");
    body["stream"] = serde_json::json!(true);
    let r = post(&h, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let proxied = r.text().await.unwrap();
    assert_eq!(
        h.emulator.requests()[0].path_and_query,
        "/openai/v1/chat/completions"
    );
    assert!(proxied.trim_end().ends_with("data: [DONE]"), "{proxied}");

    body["model"] = serde_json::json!("gpt-4o");
    let direct = direct_stream(&h.emulator, "/openai/v1/chat/completions", &body).await;
    let events = normalized_events(&proxied);
    assert!(events.len() >= 3, "{proxied}");
    assert_eq!(events, normalized_events(&direct));
    h.stop().await;
}

#[tokio::test]
async fn streamed_responses_events_pass_through_unchanged() {
    let emu = emulator().await;
    let text = v1_backend_config(&emu);
    let h = proxy(emu, &text).await;
    let body = serde_json::json!({"model": "smart", "input": "hi", "stream": true});
    let r = post(&h, "/v1/responses", &body).await;
    assert_eq!(r.status(), 200);
    let proxied = r.text().await.unwrap();
    assert_eq!(
        h.emulator.requests()[0].path_and_query,
        "/openai/v1/responses"
    );
    let events = normalized_events(&proxied);
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_deref().unwrap_or("-"))
        .collect();
    assert_eq!(names.first(), Some(&"response.created"), "{proxied}");
    assert_eq!(names.last(), Some(&"response.completed"), "{proxied}");
    assert!(
        names[1..names.len() - 1]
            .iter()
            .all(|n| *n == "response.output_text.delta"),
        "{names:?}"
    );
    let (_, completed) = events.last().unwrap();
    assert_eq!(completed["response"]["model"], "gpt-4o");

    let direct = direct_stream(
        &h.emulator,
        "/openai/v1/responses",
        &serde_json::json!({"model": "gpt-4o", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(events, normalized_events(&direct));

    // The Azure-shaped v1 path streams the same way.
    let r = post(
        &h,
        "/openai/v1/responses",
        &serde_json::json!({"model": "gpt-4o", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(normalized_events(&r.text().await.unwrap()), events);
    h.stop().await;
}

#[tokio::test]
async fn auto_identity_with_a_federated_token_file_uses_workload_identity_not_imds() {
    let emu = emulator().await;
    let tenant = emu.config().tenant_id.clone();
    let token_file = tempfile_path::TempPath::new("jwt");
    let assertion = emu.mint(&MintSpec::new("api://AzureADTokenExchange"));
    std::fs::write(&token_file.0, &assertion).unwrap();
    let config = base_config(&emu.url()).replace(
        "[identity]\nkind = \"managed-identity\"\n",
        "[identity]\nkind = \"auto\"\n",
    );
    let client_id = "0f0e0d0c-0000-4000-8000-00000000a0a0";
    let (child, _cfg) = spawn_binary(
        &config,
        &[
            ("AZURE_CLIENT_ID", client_id),
            ("AZURE_TENANT_ID", tenant.as_str()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.0.to_str().unwrap()),
        ],
    )
    .await;
    let r = client()
        .post(format!("http://{}/v1/chat/completions", child.addr))
        .header("api-key", KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stats = emu.stats();
    assert!(stats.entra_token_requests > 0, "{stats:?}");
    assert_eq!(stats.imds_token_requests, 0, "IMDS was asked: {stats:?}");
    assert_eq!(stats.msi_token_requests, 0, "{stats:?}");
    let upstream = bearer_of(&emu.requests()[0]);
    let claims = decode_unverified(&upstream).unwrap().claims;
    assert_eq!(claims.audience(), Some(COGNITIVE_AUD));
    assert_eq!(
        claims.app_id(),
        Some(client_id),
        "the pod's app, not the node's"
    );
    let (_, logs) = stop_and_collect(child).await;
    assert!(
        logs.contains("auto identity: using workload identity"),
        "the log names the credential: {logs}"
    );
    assert!(
        !logs.contains(&assertion),
        "the federated token reached the log"
    );
    assert!(
        !logs.contains(&upstream),
        "the access token reached the log"
    );
}
