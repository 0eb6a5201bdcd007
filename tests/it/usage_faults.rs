//! Answers whose usage cannot be read — not JSON, truncated JSON, a usage count of the wrong
//! type, no usage at all, a stream without its usage chunk — reach the client byte for byte as
//! Azure sent them; the key is charged the estimate and `entra_proxy_usage_estimated_total`
//! names why. Each test runs the proxy as its own process, so its counters are its own.

use crate::common::*;
use azure_emulator::{Emulator, EmulatorConfig, Fault, Garble, MintSpec};
use entra_proxy::config::KeyDigest;
use serde_json::{Value, json};

/// An emulator whose answers to the same prompt are the same bytes.
async fn stable_emulator() -> Emulator {
    emulator_with(EmulatorConfig {
        stable_ids: true,
        ..EmulatorConfig::default()
    })
    .await
}

/// The base config with a key `metered` (`metered-key`) whose tokens are limited.
fn metered_config(emu: &Emulator) -> String {
    format!(
        "{}\n[[keys]]\nname = \"metered\"\nsha256 = \"{}\"\ntokens_per_minute = 1000000\n",
        base_config(&emu.url()),
        KeyDigest::of("metered-key").to_hex()
    )
}

fn chat(text: &str, stream: bool) -> Value {
    let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// The documented estimate of `chat(text, _)`: ceil(bytes / 4) + 4 per message + 3.
fn estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4) + 4 + 3
}

/// Completion tokens the meter counts for a stream's content deltas: ceil(bytes / 4), at least 1.
fn delta_tokens(sse: &str) -> u64 {
    sse.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|c| !c.is_empty())
        .map(|c| (c.len() as u64).div_ceil(4).max(1))
        .sum()
}

/// The proxy's answer to `body` with the metered key: status, content type and bytes.
async fn through_proxy(addr: std::net::SocketAddr, body: &Value) -> (u16, String, Vec<u8>) {
    let r = client()
        .post(format!(
            "http://{addr}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", "metered-key")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// Azure's own answer to `body`, straight from the emulator.
async fn direct(emu: &Emulator, body: &Value) -> (u16, String, Vec<u8>) {
    let token = emu.mint(&MintSpec::new(COGNITIVE_AUD));
    let url = emu
        .url()
        .join("openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
        .unwrap();
    let r = client()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

async fn estimated(addr: std::net::SocketAddr, reason: &str) -> f64 {
    metric(
        addr,
        "entra_proxy_usage_estimated_total",
        &[("reason", reason)],
    )
    .await
    .unwrap_or(0.0)
}

async fn charged(addr: std::net::SocketAddr) -> f64 {
    metric(
        addr,
        "entra_proxy_tokens_total",
        &[("key", "key:metered"), ("kind", "total")],
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test]
async fn garbled_json_answers_pass_unchanged_and_are_charged_the_estimate() {
    let emu = stable_emulator().await;
    let (p, _cfg) = spawn_binary(&metered_config(&emu), &[]).await;
    let cases = [
        (Garble::NotJson, "not_json"),
        (Garble::TruncatedJson, "not_json"),
        (Garble::UsageWrongType, "malformed_usage"),
        (Garble::NoUsage, "no_usage"),
    ];
    let prompt = "garble me";
    let body = chat(prompt, false);
    for (garble, reason) in cases {
        // One garbled answer for the proxy, the same one for the direct call.
        emu.script("gpt-4o", vec![Fault::Garbled(garble); 2]);
        let (before, counted_before) = (charged(p.addr).await, estimated(p.addr, reason).await);
        let proxied = through_proxy(p.addr, &body).await;
        let azure = direct(&emu, &body).await;
        assert_eq!(proxied.0, 200, "{garble:?}");
        assert_eq!(
            proxied,
            azure,
            "{garble:?}: {}",
            String::from_utf8_lossy(&proxied.2)
        );
        if garble == Garble::UsageWrongType {
            let text = String::from_utf8(proxied.2).unwrap();
            assert!(text.contains(r#""prompt_tokens":""#), "{text}");
        }
        assert_eq!(
            charged(p.addr).await - before,
            estimate(prompt) as f64,
            "{garble:?}: the estimate is charged"
        );
        assert_eq!(
            estimated(p.addr, reason).await - counted_before,
            1.0,
            "{garble:?} counts as {reason}"
        );
    }
    let (_, log) = stop_and_collect(p).await;
    assert!(log.contains("usage_estimated=true"), "{log}");
    assert!(!log.contains("metered-key"), "no key in the log");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_stream_without_usage_or_with_unreadable_usage_passes_as_asked_and_is_estimated() {
    let emu = stable_emulator().await;
    let (p, _cfg) = spawn_binary(&metered_config(&emu), &[]).await;
    let prompt = "stream and garble me";
    let body = chat(prompt, true);
    for (garble, reason) in [
        (Garble::NoUsage, "no_usage"),
        (Garble::UsageWrongType, "malformed_usage"),
    ] {
        emu.script("gpt-4o", vec![Fault::Garbled(garble)]);
        let (before, counted_before) = (charged(p.addr).await, estimated(p.addr, reason).await);
        let proxied = through_proxy(p.addr, &body).await;
        // What the client would get without the proxy: it did not ask for usage.
        let azure = direct(&emu, &body).await;
        let text = String::from_utf8(proxied.2.clone()).unwrap();
        assert_eq!(proxied, azure, "{garble:?}: {text}");
        assert!(!text.contains("usage"), "{garble:?}: {text}");
        let deltas = delta_tokens(&text);
        assert!(deltas > 0);
        assert_eq!(
            charged(p.addr).await - before,
            (estimate(prompt) + deltas) as f64,
            "{garble:?}: the estimate and the deltas seen"
        );
        assert_eq!(
            estimated(p.addr, reason).await - counted_before,
            1.0,
            "{garble:?}"
        );
    }
    let seen = emu.requests();
    assert!(
        seen.iter()
            .filter(|s| s.header("authorization").is_some_and(|a| !a.is_empty()))
            .all(|s| !s.headers.iter().any(|(_, v)| v.contains("metered-key")))
    );
    let _ = stop_and_collect(p).await;
}
