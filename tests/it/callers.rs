//! Every kind of caller over real HTTP: Entra tokens (passed through or swapped), client
//! credentials, legacy resource keys, per-key policy and per-mode switches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{Emulator, MintSpec};
use entra_proxy::claims::decode_unverified;
use entra_proxy::config::KeyDigest;
use std::time::Duration;

const PROXY_AUD: &str = "api://entra-proxy";

fn entra_config(emu: &Emulator, extra: &str) -> String {
    format!(
        "{}\n[inbound.entra]\ntenants = [\"{}\"]\naudiences = [\"{PROXY_AUD}\"]\n{extra}",
        base_config(&emu.url()),
        emu.config().tenant_id
    )
}

async fn entra_harness() -> Harness {
    let emu = emulator().await;
    let text = entra_config(&emu, "");
    proxy(emu, &text).await
}

async fn call(h: &Harness, auth: &str) -> reqwest::Response {
    client()
        .post(h.url("/v1/chat/completions"))
        .header("authorization", auth)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn management_token_gets_401_naming_both_audiences_and_the_scope() {
    let h = entra_harness().await;
    let token = h
        .emulator
        .mint(&MintSpec::new("https://management.azure.com"));
    let (status, code, message) = error_of(call(&h, &format!("Bearer {token}")).await).await;
    assert_eq!(status, 401);
    assert_eq!(code, "token_wrong_audience");
    assert!(
        message.contains("https://management.azure.com"),
        "{message}"
    );
    assert!(
        message.contains("https://cognitiveservices.azure.com (forwarded as is)"),
        "{message}"
    );
    assert!(
        message.contains("https://cognitiveservices.azure.com/.default"),
        "{message}"
    );
    assert!(!message.contains(&token));
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

#[tokio::test]
async fn cognitiveservices_token_is_passed_through_byte_for_byte() {
    let h = entra_harness().await;
    let token = h.emulator.mint(&MintSpec::new(COGNITIVE_AUD));
    let r = call(&h, &format!("Bearer {token}")).await;
    assert_eq!(r.status(), 200);
    let seen = h.emulator.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    // Trailing slash in aud is the same audience.
    let token = h
        .emulator
        .mint(&MintSpec::new("https://cognitiveservices.azure.com/"));
    assert_eq!(call(&h, &format!("Bearer {token}")).await.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn token_for_the_proxy_is_swapped_for_the_proxys_own() {
    let h = entra_harness().await;
    let mut spec = MintSpec::new(PROXY_AUD);
    spec.appid = Some("caller-app".into());
    let token = h.emulator.mint(&spec);
    let r = call(&h, &format!("Bearer {token}")).await;
    assert_eq!(r.status(), 200);
    let seen = h.emulator.requests();
    let upstream = seen[0]
        .header("authorization")
        .unwrap()
        .trim_start_matches("Bearer ");
    assert_ne!(upstream, token);
    let c = decode_unverified(upstream).unwrap().claims;
    assert_eq!(c.audience(), Some(COGNITIVE_AUD));
    assert_eq!(
        c.app_id(),
        Some(h.emulator.config().managed_identity_client_id.as_str())
    );
    h.stop().await;
}

#[tokio::test]
async fn each_bad_token_gets_a_401_that_names_the_problem() {
    let h = entra_harness().await;
    let tenant = h.emulator.config().tenant_id.clone();
    let mut cases: Vec<(String, &str, &str)> = Vec::new();

    let mut s = MintSpec::new(COGNITIVE_AUD);
    s.tenant_id = Some("99999999-9999-9999-9999-999999999999".into());
    cases.push((
        h.emulator.mint(&s),
        "token_wrong_tenant",
        "99999999-9999-9999-9999-999999999999",
    ));

    let mut s = MintSpec::new(COGNITIVE_AUD);
    s.lifetime_secs = -3600;
    cases.push((h.emulator.mint(&s), "token_expired", "token expired at"));

    let mut s = MintSpec::new(COGNITIVE_AUD);
    s.not_before_secs = 3600;
    cases.push((
        h.emulator.mint(&s),
        "token_not_yet_valid",
        "not valid before",
    ));

    let mut s = MintSpec::new(COGNITIVE_AUD);
    s.bad_signature = true;
    cases.push((
        h.emulator.mint(&s),
        "token_bad_signature",
        "signature is invalid",
    ));

    let mut s = MintSpec::new(COGNITIVE_AUD);
    s.kid = Some("no-such-kid".into());
    cases.push((h.emulator.mint(&s), "token_unknown_kid", "no-such-kid"));

    cases.push((
        "eyJhbGciOiJSUzI1NiJ9.eyJub3QganNvbg.c2ln".into(),
        "token_malformed",
        "malformed",
    ));

    for (token, code, needle) in cases {
        let (status, got, message) = error_of(call(&h, &format!("Bearer {token}")).await).await;
        assert_eq!(status, 401, "{code}: {message}");
        assert_eq!(got, code, "{message}");
        assert!(message.contains(needle), "{code}: {message}");
        assert!(!message.contains(&token));
    }
    assert!(!tenant.is_empty());
    assert_eq!(h.emulator.stats().data_requests, 0);
    h.stop().await;
}

#[tokio::test]
async fn rotated_signing_keys_are_picked_up() {
    let h = entra_harness().await;
    let t1 = h.emulator.mint(&MintSpec::new(COGNITIVE_AUD));
    assert_eq!(call(&h, &format!("Bearer {t1}")).await.status(), 200);
    let kid = h.emulator.rotate_signing_key();
    let t2 = h.emulator.mint(&MintSpec::new(COGNITIVE_AUD));
    assert_eq!(
        decode_unverified(&t2).unwrap().header.kid.as_deref(),
        Some(kid.as_str())
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = call(&h, &format!("Bearer {t2}")).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    h.stop().await;
}

#[tokio::test]
async fn entra_mode_can_be_switched_off() {
    let emu = emulator().await;
    let text = entra_config(&emu, "").replace(
        "[inbound.entra]",
        "[inbound]\nmodes = [\"key\"]\n\n[inbound.entra]",
    );
    let h = proxy(emu, &text).await;
    let token = h.emulator.mint(&MintSpec::new(COGNITIVE_AUD));
    let (status, code, message) = error_of(call(&h, &format!("Bearer {token}")).await).await;
    assert_eq!((status, code.as_str()), (401, "credential_mode_disabled"));
    assert!(message.contains("entra"), "{message}");
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
    emu.register_app(&tenant, "app-two", "secret-two-value");
    emu.register_app(&tenant, "app-old", "secret-old-value");
    emu.expire_app_secret("app-old");
    let text = format!(
        "{}\n[inbound.client_credentials]\ntenant_id = \"{tenant}\"\nallow_tenant_header = true\n",
        base_config(&emu.url())
    );
    proxy(emu, &text).await
}

#[tokio::test]
async fn client_credentials_of_two_apps_carry_two_app_tokens() {
    let h = client_credentials_harness().await;
    for (id, secret) in [
        ("app-one", "secret-one-value"),
        ("app-two", "secret-two-value"),
    ] {
        let r = call(&h, &basic(id, secret)).await;
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains(secret));
    }
    let seen = h.emulator.requests();
    let apps: Vec<String> = seen
        .iter()
        .map(|r| {
            let t = r
                .header("authorization")
                .unwrap()
                .trim_start_matches("Bearer ");
            decode_unverified(t)
                .unwrap()
                .claims
                .app_id()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(apps, vec!["app-one".to_string(), "app-two".to_string()]);
    assert_ne!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
    h.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_cold_requests_for_one_app_make_one_grant() {
    let h = client_credentials_harness().await;
    wait_ready(&h).await;
    let before = h.emulator.stats().entra_token_requests;
    for status in concurrent_chats(
        &h,
        20,
        ("authorization", &basic("app-one", "secret-one-value")),
    )
    .await
    {
        assert_eq!(status, 200);
    }
    assert_eq!(h.emulator.stats().entra_token_requests - before, 1);
    h.stop().await;
}

#[tokio::test]
async fn entra_errors_for_client_credentials_come_back_with_code_and_fix() {
    let h = client_credentials_harness().await;
    let cases = [
        (
            basic("app-one", "wrong-secret"),
            None,
            7000215,
            "Value, not its Secret ID",
        ),
        (
            basic("app-nobody", "x"),
            None,
            700016,
            "was not found in tenant",
        ),
        (
            basic("app-old", "secret-old-value"),
            None,
            7000222,
            "has expired",
        ),
        (
            basic("app-one", "secret-one-value"),
            Some("00000000-0000-0000-0000-00000000dead"),
            90002,
            "tenant 00000000-0000-0000-0000-00000000dead was not found",
        ),
    ];
    for (auth, tenant, aadsts, needle) in cases {
        let mut req = client()
            .post(h.url("/v1/chat/completions"))
            .header("authorization", &auth)
            .json(&chat_body("gpt-4o"));
        if let Some(t) = tenant {
            req = req.header("x-ms-tenant-id", t);
        }
        let (status, code, message) = error_of(req.send().await.unwrap()).await;
        assert_eq!(status, 401, "{message}");
        assert_eq!(code, "invalid_client_credentials");
        assert!(message.contains(&format!("AADSTS{aadsts}")), "{message}");
        assert!(message.contains(needle), "{message}");
        assert!(!message.contains("wrong-secret") && !message.contains("secret-old-value"));
    }
    h.stop().await;
}

#[tokio::test]
async fn legacy_resource_key_is_swapped_and_never_forwarded() {
    let emu = emulator().await;
    let old_key = "0123456789abcdef0123456789abcdef";
    let text = format!(
        "{}\n[[keys]]\nname = \"old-resource-key\"\nsha256 = \"{}\"\nlegacy = true\n",
        base_config(&emu.url()),
        KeyDigest::of(old_key).to_hex()
    );
    let h = proxy(emu, &text).await;
    let r = client()
        .post(h.url("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"))
        .header("api-key", old_key)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = h.emulator.requests();
    assert!(seen[0].header("api-key").is_none());
    assert!(
        !seen
            .iter()
            .any(|r| r.headers.iter().any(|(_, v)| v.contains(old_key)))
    );
    assert_eq!(seen[0].bearer_audience.as_deref(), Some(COGNITIVE_AUD));
    h.stop().await;
}

#[tokio::test]
async fn per_key_policy_models_expiry_and_rate() {
    let emu = emulator().await;
    let text = format!(
        "{}\n[[keys]]\nname = \"limited\"\nsha256 = \"{}\"\nmodels = [\"embed\"]\nrequests_per_minute = 2\n\n[[keys]]\nname = \"expired\"\nsha256 = \"{}\"\nexpires = \"2020-01-01T00:00:00Z\"\n",
        base_config(&emu.url()),
        KeyDigest::of("limited-key").to_hex(),
        KeyDigest::of("expired-key").to_hex()
    );
    let h = proxy(emu, &text).await;
    let post = |key: &'static str, model: &'static str| {
        let url = h.url(if model == "embed" {
            "/v1/embeddings"
        } else {
            "/v1/chat/completions"
        });
        async move {
            client()
                .post(url)
                .header("api-key", key)
                .json(&serde_json::json!({"model": model, "input": "x", "messages": []}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = post("limited-key", "gpt-4o").await;
    assert_eq!(r.headers()["x-entra-proxy-caller"], "key:limited");
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    assert!(
        message.contains("gpt-4o") && message.contains("allowed: embed"),
        "{message}"
    );
    // The refused request was not counted: both of the two per minute are left.
    assert_eq!(post("limited-key", "embed").await.status(), 200);
    assert_eq!(post("limited-key", "embed").await.status(), 200);
    let r = post("limited-key", "embed").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (status, code, message) = error_of(post("expired-key", "embed").await).await;
    assert_eq!((status, code.as_str()), (401, "key_expired"));
    assert!(
        message.contains("expired at 2020-01-01T00:00:00Z"),
        "{message}"
    );
    h.stop().await;
}

#[tokio::test]
async fn loopback_sidecar_without_keys_needs_no_credential() {
    let emu = emulator().await;
    let text = base_config(&emu.url());
    let start = text.find("[[keys]]").unwrap();
    let h = proxy(emu, &text[..start]).await;
    let r = client()
        .post(h.url("/v1/chat/completions"))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}
