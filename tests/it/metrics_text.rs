//! `/metrics` reads on its own: every metric has `# HELP` and `# TYPE`, and a request that named
//! no model is `none` there and in the access log alike.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;

const AZURE_CHAT: &str = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21";

#[tokio::test]
async fn every_metric_has_help_and_a_type() {
    let emu = emulator().await;
    let text = base_config(&emu.url());
    let (child, _cfg) = spawn_binary(&text, &[]).await;
    let c = client();
    let url = |path: &str| format!("http://{}{path}", child.addr);
    let r = c
        .post(url("/v1/chat/completions"))
        .header("api-key", KEY)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let r = c.post(url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let text = metrics_text(child.addr).await;
    let described = |kind: &str| -> Vec<String> {
        let prefix = format!("# {kind} ");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let (helps, types) = (described("HELP"), described("TYPE"));
    for name in &types {
        assert!(helps.contains(name), "{name} has no # HELP:\n{text}");
    }
    let mut samples = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| types.iter().any(|t| t == b))
            })
            .unwrap_or(name);
        assert!(
            types.iter().any(|t| t == base),
            "{name} has no # TYPE:\n{text}"
        );
        samples += 1;
    }
    for name in [
        "entra_proxy_requests_total",
        "entra_proxy_upstream_seconds",
        "entra_proxy_rejected_requests_total",
        "entra_proxy_key_requests_total",
        "entra_proxy_tokens_total",
    ] {
        assert!(helps.iter().any(|h| h == name), "{name}:\n{text}");
    }
    assert!(samples > 20, "{text}");
    let _ = stop_and_collect(child).await;
}

#[tokio::test]
async fn a_request_naming_no_model_is_model_none_in_metrics_and_the_access_log() {
    let emu = emulator().await;
    let text = base_config(&emu.url());
    let (child, _cfg) = spawn_binary(&text, &[]).await;
    // An Azure-style path names a deployment, not a model.
    let r = client()
        .post(format!("http://{}{AZURE_CHAT}", child.addr))
        .header("api-key", KEY)
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let metrics = metrics_text(child.addr).await;
    assert!(
        metric_in(
            &metrics,
            "entra_proxy_requests_total",
            &[("model", "none"), ("status", "200")]
        ) >= Some(1.0),
        "{metrics}"
    );
    assert!(
        metric_in(
            &metrics,
            "entra_proxy_tokens_total",
            &[
                ("model", "none"),
                ("deployment", "gpt-4o"),
                ("kind", "total")
            ]
        ) > Some(0.0),
        "{metrics}"
    );
    assert!(!metrics.contains("model=\"\""), "{metrics}");
    let (_, logs) = stop_and_collect(child).await;
    let line = logs
        .lines()
        .find(|l| l.contains("entra_proxy::access: proxied "))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        line.contains(" model=\"none\" deployment=\"gpt-4o\" "),
        "{line}"
    );
    assert!(!logs.contains("model=\"-\""), "{logs}");
}
