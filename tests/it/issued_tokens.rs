//! `POST /sts/v1.0/issueToken` answered by the proxy: a 10-minute token bound to the key that
//! asked, accepted as that key (its policy, its budget) and never forwarded; expired, forged,
//! revoked and foreign tokens refused with their own codes; reloads keep tokens, restarts and
//! other processes do not, unless they share `issued_token_secret`; the token and the key never
//! reach a log line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use azure_emulator::{AuthForm, Emulator, MintSpec, ResourceKind, ServiceOptions};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entra_proxy::config::{Config, KeyDigest};
use entra_proxy::state::Origin;

const KEY_B: &str = "test-key-team-b";
const SECRET: &str = "an-issued-token-secret-of-40-characters!!";

fn key_b() -> String {
    format!(
        "[[keys]]\nname = \"team-b\"\nsha256 = \"{}\"\n",
        KeyDigest::of(KEY_B).to_hex()
    )
}

/// The config of a proxy in front of a regional Speech resource; `server` goes into
/// `[server]`, `keys` after the test key.
fn config(emu: &Emulator, endpoint: &url::Url, server: &str, keys: &str) -> String {
    let rid = ServiceOptions::default_resource_id(ResourceKind::SpeechRegional);
    service_config(
        &emu.url(),
        endpoint,
        &format!("service = \"speech\"\nresource_id = \"{rid}\""),
        keys,
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{server}"),
    )
}

async fn start(server: &str, keys: &str) -> Harness {
    let emu = emulator().await;
    let endpoint = add_service(
        &emu,
        ResourceKind::SpeechRegional,
        ServiceOptions::default(),
    )
    .await;
    let text = config(&emu, &endpoint, server, keys);
    proxy(emu, &text).await
}

async fn issue(h: &Harness, path: &str, credential: (&str, &str)) -> reqwest::Response {
    client()
        .post(h.url(path))
        .header(credential.0, credential.1)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap()
}

async fn token_for(h: &Harness, key: &str) -> String {
    let r = issue(
        h,
        "/sts/v1.0/issueToken",
        ("ocp-apim-subscription-key", key),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn voices(h: &Harness, token: &str) -> reqwest::Response {
    client()
        .get(h.url("/cognitiveservices/voices/list"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The token's claims, read without checking anything.
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A token signed with `secret` carrying `claims` (what a holder of the secret could make).
fn signed(secret: &str, claims: &serde_json::Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"entra-proxy-issued"}"#);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[tokio::test]
async fn a_key_gets_a_ten_minute_token_that_speech_calls_take_instead_of_the_key() {
    let h = start("", "").await;
    let r = issue(
        &h,
        "/sts/v1.0/issueToken",
        ("ocp-apim-subscription-key", KEY),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/jwt; charset=us-ascii"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let token = r.text().await.unwrap();
    assert_eq!(token.split('.').count(), 3);
    let c = claims(&token);
    assert_eq!(c["sub"], "key:team-a");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    assert!(!token.contains(&KeyDigest::of(KEY).to_hex()));
    // Azure never saw the token request.
    assert!(h.emulator.requests().is_empty());

    let r = voices(&h, &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-emulator-auth"], "aad");
    let seen = h.emulator.requests();
    assert!(matches!(seen[0].auth, AuthForm::SpeechAad { .. }));
    assert!(seen[0].headers.iter().all(|(_, v)| !v.contains(&token)));

    // The regional path in any case, the key in any of its forms.
    for (path, credential) in [
        ("/sts/v1.0/issuetoken", ("api-key", KEY.to_string())),
        (
            "/STS/v1.0/issueToken/",
            ("authorization", format!("Bearer {KEY}")),
        ),
    ] {
        let r = issue(&h, path, (credential.0, &credential.1)).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = client()
        .post(h.url(&format!("/sts/v1.0/issueToken?Subscription-Key={KEY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No key, no token.
    let r = client()
        .post(h.url("/sts/v1.0/issueToken"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.1, "missing_credential");
    h.stop().await;
}

#[tokio::test]
async fn a_token_counts_against_the_budget_of_the_key_it_was_issued_for() {
    let h = start("", &format!("{}requests_per_minute = 2\n", key_b())).await;
    // team-b's key has a budget of 2 requests a minute; team-a's none.
    let token_b = token_for(&h, KEY_B).await;
    assert_eq!(claims(&token_b)["sub"], "key:team-b");
    assert_eq!(voices(&h, &token_b).await.status(), 200);
    assert_eq!(voices(&h, &token_b).await.status(), 200);
    let (status, code, _) = error_of(voices(&h, &token_b).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    // The key itself is out of budget too: the token is that key.
    let r = client()
        .get(h.url("/cognitiveservices/voices/list"))
        .header("ocp-apim-subscription-key", KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // team-a's token is team-a's, not team-b's.
    let token_a = token_for(&h, KEY).await;
    let r = voices(&h, &token_a).await;
    assert_eq!(r.status(), 200);
    // And a token edited to name another key is refused: the signature no longer holds.
    let mut c = claims(&token_a);
    c["sub"] = "key:team-b".into();
    let parts: Vec<&str> = token_a.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    let (status, code, message) = error_of(voices(&h, &forged).await).await;
    assert_eq!((status, code.as_str()), (401, "issued_token_invalid"));
    assert!(!message.contains(&forged));
    assert_eq!(
        entra_proxy_caller_of(&h, &token_a).await.as_deref(),
        Some("key:team-a")
    );
    h.stop().await;
}

/// The caller the proxy names on an error answer to a request with `token` (its label).
async fn entra_proxy_caller_of(h: &Harness, token: &str) -> Option<String> {
    // An upload to a path Speech does not have: the emulator's 404 carries the caller header.
    let r = client()
        .get(h.url("/cognitiveservices/nowhere"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.headers()
        .get("x-entra-proxy-caller")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn expired_and_foreign_tokens_are_refused_with_their_own_codes() {
    let h = start(&format!("issued_token_secret = \"{SECRET}\""), "").await;
    let token = token_for(&h, KEY).await;
    assert_eq!(voices(&h, &token).await.status(), 200);
    // The same claims, signed with the shared secret but expired a minute ago.
    let mut c = claims(&token);
    let now = c["iat"].as_i64().unwrap();
    c["iat"] = (now - 660).into();
    c["exp"] = (now - 60).into();
    let (status, code, message) = error_of(voices(&h, &signed(SECRET, &c)).await).await;
    assert_eq!((status, code.as_str()), (401, "issued_token_expired"));
    assert!(message.contains("fetch a new one"), "{message}");
    // Signed with another secret: not this proxy's.
    let (status, code, _) = error_of(
        voices(
            &h,
            &signed("another-secret-of-forty-characters-000000", &claims(&token)),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "issued_token_invalid"));
    // Another proxy (a restart, a replica) with its own per-process key refuses it; one with
    // the same secret takes it.
    let other = start("", "").await;
    let (status, code, _) = error_of(voices(&other, &token).await).await;
    assert_eq!((status, code.as_str()), (401, "issued_token_invalid"));
    let shared = start(&format!("issued_token_secret = \"{SECRET}\""), "").await;
    assert_eq!(voices(&shared, &token).await.status(), 200);
    assert_eq!(
        h.emulator.requests().len(),
        1,
        "refused tokens never reach Azure"
    );
    h.stop().await;
    other.stop().await;
    shared.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_tokens_and_a_rotated_key_revokes_them() {
    let emu = emulator().await;
    let endpoint = add_service(
        &emu,
        ResourceKind::SpeechRegional,
        ServiceOptions::default(),
    )
    .await;
    let text = config(&emu, &endpoint, "", "");
    let h = proxy(emu, &text).await;
    let token = token_for(&h, KEY).await;
    let reload = |text: &str| {
        let config = Config::parse(text, "reload", &|_| None).unwrap();
        let snapshot = h.state.prepare(config, Origin::of_text(text)).unwrap();
        h.state.install(snapshot);
    };
    // The same keys again: the token stays good.
    reload(&format!("{text}\n# touched\n"));
    assert_eq!(voices(&h, &token).await.status(), 200);
    // team-a's key rotated: same name, another key.
    reload(&text.replace(
        &KeyDigest::of(KEY).to_hex(),
        &KeyDigest::of("rotated").to_hex(),
    ));
    let (status, code, message) = error_of(voices(&h, &token).await).await;
    assert_eq!((status, code.as_str()), (401, "issued_token_revoked"));
    assert!(message.contains("key:team-a"), "{message}");
    // Removed altogether.
    reload(&text.replace("name = \"team-a\"", "name = \"team-c\""));
    assert_eq!(
        error_of(voices(&h, &token).await).await.1,
        "issued_token_revoked"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_caller_whose_own_token_reaches_azure_gets_no_token() {
    let emu = emulator().await;
    let endpoint = add_service(&emu, ResourceKind::AiServices, ServiceOptions::default()).await;
    let text = service_config(
        &emu.url(),
        &endpoint,
        "service = \"speech\"",
        &format!(
            "[inbound.entra]\ntenants = [\"{}\"]\naudiences = [\"api://entra-proxy\"]\n",
            emu.config().tenant_id
        ),
    );
    let h = proxy(emu, &text).await;
    let passthrough = h.emulator.mint(&MintSpec::new(COGNITIVE_AUD));
    let r = issue(
        &h,
        "/sts/v1.0/issueToken",
        ("authorization", &format!("Bearer {passthrough}")),
    )
    .await;
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (403, "issue_token_not_for_caller"));
    assert!(message.contains("entra"), "{message}");
    // A token minted for the proxy is swapped for the proxy's own: that caller may.
    let for_proxy = h.emulator.mint(&MintSpec::new("api://entra-proxy"));
    let r = issue(
        &h,
        "/sts/v1.0/issueToken",
        ("authorization", &format!("Bearer {for_proxy}")),
    )
    .await;
    assert_eq!(r.status(), 200);
    let token = r.text().await.unwrap();
    assert_eq!(claims(&token)["sub"], "entra");
    let r = client()
        .get(h.url("/tts/cognitiveservices/voices/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn neither_the_key_nor_the_token_reaches_a_log_line() {
    let emu = emulator().await;
    let endpoint = add_service(
        &emu,
        ResourceKind::SpeechRegional,
        ServiceOptions::default(),
    )
    .await;
    let text = config(
        &emu,
        &endpoint,
        &format!("issued_token_secret = \"{SECRET}\""),
        "",
    );
    let (child, _config) = spawn_binary(&text, &[]).await;
    let base = format!("http://{}", child.addr);
    let r = client()
        .post(format!("{base}/sts/v1.0/issueToken"))
        .header("ocp-apim-subscription-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.text().await.unwrap();
    let r = client()
        .get(format!("{base}/cognitiveservices/voices/list"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!(
            "{base}/cognitiveservices/voices/list?Authorization=Bearer%20{token}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, stderr) = stop_and_collect(child).await;
    assert!(stderr.contains("token issued"), "{stderr}");
    for secret in [
        KEY,
        token.as_str(),
        SECRET,
        token.split('.').nth(2).unwrap(),
    ] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }
}
