//! The access log of the real binary: one line per proxied or refused request, in text and in
//! JSON, with the caller, route, status and usage, never a credential, and filtered by
//! `RUST_LOG` under its own target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;

const CHAT: &str = "/openai/deployments/gpt-4o/chat/completions";

/// A metered chat answer, a streamed one, an answer that is not metered (Azure's 404), and a
/// request refused for its key — the key also sent in the query, where it must be masked.
async fn traffic(addr: std::net::SocketAddr) {
    let c = client();
    let url = |path: &str| format!("http://{addr}{path}?api-version=2024-10-21");
    let r = c
        .post(url(CHAT))
        .header("api-key", KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let mut streamed = chat_body("gpt-4o");
    streamed["stream"] = true.into();
    streamed["stream_options"] = serde_json::json!({"include_usage": true});
    let r = c
        .post(url(CHAT))
        .header("api-key", KEY)
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    let r = c
        .post(url("/openai/deployments/absent/chat/completions"))
        .header("api-key", KEY)
        .json(&chat_body("absent"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!(
            "http://{addr}{CHAT}?api-version=2024-10-21&api-key=not-{KEY}"
        ))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

fn access_lines(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains("entra_proxy::access"))
        .collect()
}

#[tokio::test]
async fn text_lines_name_the_caller_route_status_and_usage_and_never_the_key() {
    let emu = emulator().await;
    let (child, _cfg) = spawn_binary(&base_config(&emu.url()), &[]).await;
    traffic(child.addr).await;
    let (_, logs) = stop_and_collect(child).await;
    assert!(!logs.contains(KEY), "the log leaked the key: {logs}");
    let lines = access_lines(&logs);
    assert_eq!(lines.len(), 4, "{logs}");
    let proxied: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(" INFO entra_proxy::access: proxied request_id="))
        .collect();
    assert_eq!(proxied.len(), 3, "{logs}");
    for line in &proxied {
        assert!(
            line.contains("query=api-version=2024-10-21 caller=key:team-a backend=primary"),
            "{line}"
        );
    }
    for metered in &proxied[..2] {
        assert!(metered.contains(" status=200 took_ms="), "{metered}");
        assert!(
            metered.contains(&format!("path={CHAT} ")) && metered.contains("deployment=\"gpt-4o\""),
            "{metered}"
        );
        assert!(metered.contains(" prompt_tokens="), "{metered}");
        assert!(!metered.contains(" total_tokens=0 "), "{metered}");
        assert!(
            metered.contains(" usage_estimated=false ended=true"),
            "{metered}"
        );
    }
    assert!(
        proxied[2].contains(" status=404 took_ms="),
        "{}",
        proxied[2]
    );
    assert!(!proxied[2].contains("prompt_tokens"), "{}", proxied[2]);
    let rejected = lines
        .iter()
        .find(|l| l.contains("entra_proxy::access: rejected "))
        .unwrap();
    assert!(rejected.contains(" method=POST "), "{rejected}");
    assert!(rejected.contains("&api-key=*** "), "{rejected}");
    assert!(
        rejected.contains(" status=401 code=invalid_api_key error="),
        "{rejected}"
    );
}

#[tokio::test]
async fn json_lines_are_one_object_each_with_typed_fields() {
    let emu = emulator().await;
    let (child, _cfg) = spawn_binary(
        &base_config(&emu.url()),
        &[("ENTRA_PROXY_LOG_FORMAT", "json")],
    )
    .await;
    traffic(child.addr).await;
    let (_, logs) = stop_and_collect(child).await;
    assert!(!logs.contains(KEY), "the log leaked the key: {logs}");
    let lines: Vec<serde_json::Value> = access_lines(&logs)
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 4, "{logs}");
    let proxied: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["message"] == "proxied").collect();
    assert_eq!(proxied.len(), 3, "{logs}");
    for line in &proxied[..2] {
        assert_eq!(line["target"], "entra_proxy::access", "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["path"], CHAT, "{line}");
        assert_eq!(line["query"], "api-version=2024-10-21", "{line}");
        assert_eq!(line["caller"], "key:team-a", "{line}");
        assert_eq!(line["deployment"], "gpt-4o", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert!(line["prompt_tokens"].as_u64().unwrap() > 0, "{line}");
        assert_eq!(
            line["total_tokens"].as_u64().unwrap(),
            line["prompt_tokens"].as_u64().unwrap() + line["completion_tokens"].as_u64().unwrap(),
            "{line}"
        );
        assert_eq!(line["usage_estimated"], false, "{line}");
        assert_eq!(line["ended"], true, "{line}");
        assert!(line["took_ms"].is_u64(), "{line}");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    let rejected = lines.iter().find(|l| l["message"] == "rejected").unwrap();
    assert_eq!(rejected["status"], 401, "{rejected}");
    assert_eq!(rejected["code"], "invalid_api_key", "{rejected}");
    assert_eq!(
        rejected["query"], "api-version=2024-10-21&api-key=***",
        "{rejected}"
    );
    // Every other line is JSON too.
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[tokio::test]
async fn rust_log_turns_access_lines_off_by_their_target_alone() {
    let emu = emulator().await;
    let (child, _cfg) = spawn_binary(
        &base_config(&emu.url()),
        &[("RUST_LOG", "info,entra_proxy::access=off")],
    )
    .await;
    traffic(child.addr).await;
    let (_, logs) = stop_and_collect(child).await;
    assert!(access_lines(&logs).is_empty(), "{logs}");
    assert!(
        !logs.contains("proxied") && !logs.contains("rejected"),
        "{logs}"
    );
    assert!(logs.contains(" INFO "), "other info lines stay: {logs}");
}
